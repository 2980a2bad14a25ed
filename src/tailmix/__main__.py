import sys

try:  # Ctrl-C before the command line is read: one line, as the command gives later
    from tailmix.cli import main
except KeyboardInterrupt:
    sys.stderr.write("tailmix: interrupted\n")
    raise SystemExit(130) from None

if __name__ == "__main__":
    raise SystemExit(main())
