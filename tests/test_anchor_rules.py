"""Borderline-SMOTE's and ADASYN's anchors: which examples are in danger and how many
synthetic examples each minority example gets, against imbalanced-learn's own samplers and
hand-worked cases; then the rules in a training run, a user's loop and the estimator."""

import numpy as np
import pytest
import torch

from tailmix._validation import ParameterError
from tailmix.mixing import Mixer
from tailmix.mixing.neighbours import NeighbourTable, adasyn_density, in_danger, knn_indices
from tailmix.samplers import Resampled, build_sampler, largest_remainder

imblearn = pytest.importorskip("imblearn", reason="the rules are checked against "
                               "imbalanced-learn (the dev extra installs it)")


class _ZeroSteps(np.random.RandomState):
    """A random state whose interpolation steps are all 0: every synthetic example an
    imbalanced-learn sampler makes is then a copy of its anchor, which names the anchor."""

    def uniform(self, low=0.0, high=1.0, size=None):
        return np.zeros(size)


def _blobs(seed: int, counts=(120, 40, 15), spread=1.2):
    """Overlapping 2-D Gaussian classes, float64 (no near-ties between float kinds)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [1.5, 0.5], [0.5, 1.5]])
    X = np.concatenate([rng.normal(centres[c], spread, size=(n, 2))
                        for c, n in enumerate(counts)])
    y = np.repeat(np.arange(len(counts)), counts)
    return X, y


def _anchors_of(X, X_res, n):
    """Which original example each synthetic row copies (steps were 0)."""
    new = X_res[n:]
    match = (np.abs(new[:, None, :] - X[None, :, :]).sum(axis=2) == 0)
    assert (match.sum(axis=1) == 1).all()
    return match.argmax(axis=1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("m", [4, 5, 10])
def test_danger_matches_borderline_smote(seed, m):
    X, y = _blobs(seed)
    sampler = imblearn.over_sampling.BorderlineSMOTE(m_neighbors=m, k_neighbors=5,
                                                     random_state=_ZeroSteps(seed))
    X_res, _ = sampler.fit_resample(X, y)
    context = knn_indices(torch.from_numpy(X), torch.from_numpy(y), k=m, within_class=False)
    danger = in_danger(context, torch.from_numpy(y)).numpy()
    for c in (1, 2):  # the classes imbalanced-learn oversamples
        theirs = np.sort(sampler.in_danger_indices.get(c, np.array([], dtype=int)))
        ours = np.flatnonzero(danger & (y == c))
        np.testing.assert_array_equal(ours, theirs)
    # every synthetic example imbalanced-learn made copies an example in danger
    assert danger[_anchors_of(X, X_res, len(X))].all()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [3, 5])
def test_adasyn_allotment_matches_imbalanced_learn(seed, k):
    X, y = _blobs(seed, spread=1.0)
    sampler = imblearn.over_sampling.ADASYN(n_neighbors=k, random_state=_ZeroSteps(seed))
    X_res, y_res = sampler.fit_resample(X, y)
    theirs = np.bincount(_anchors_of(X, X_res, len(X)), minlength=len(X))

    labels = torch.from_numpy(y)
    mixer = Mixer.preset("adasyn", k=k)
    mixer.start_epoch(0, labels=labels, inputs=torch.from_numpy(X), features=None)
    plan = Resampled(build_sampler("instance", labels=labels), mode="oversample",
                     anchor_weights=mixer.anchor_weights, quota=mixer.anchor_quota)
    idx, synthetic = plan.epoch_plan(0, seed=seed)
    ours = np.bincount(idx[synthetic].numpy(), minlength=len(X))
    for c in (1, 2):
        members = y == c
        wanted = (y == 0).sum() - members.sum()
        assert ours[members].sum() == wanted  # every class reaches n_max
        if theirs[members].sum() == wanted:  # their rounding kept the total: identical
            np.testing.assert_array_equal(ours[members], theirs[members])
        else:  # rounding each share moved their total; ours differs by at most one
            assert np.abs(ours[members] - theirs[members]).max() <= 1
    # the plan is the same every epoch (an allotment, not a draw)
    idx1, synthetic1 = plan.epoch_plan(1, seed=seed)
    assert np.array_equal(np.bincount(idx1[synthetic1].numpy(), minlength=len(X)), ours)


def test_adasyn_partners_are_imbalanced_learns_class_neighbours():
    """ADASYN interpolates toward one of the anchor's k nearest neighbours of its own class;
    the mixer's table holds the same neighbours."""
    from sklearn.neighbors import NearestNeighbors

    X, y = _blobs(3)
    mixer = Mixer.preset("adasyn")
    mixer.start_epoch(0, labels=torch.from_numpy(y), inputs=torch.from_numpy(X), features=None)
    for c in range(3):
        members = np.flatnonzero(y == c)
        nn = NearestNeighbors(n_neighbors=6).fit(X[members])
        theirs = members[nn.kneighbors(X[members], return_distance=False)[:, 1:]]
        np.testing.assert_array_equal(mixer.neighbours.indices[members].numpy(), theirs)


def test_danger_by_hand():
    # On a line: class 0 at 0, 1, 2, 3 and class 1 at 2.4, 2.6, 10, 11, 12.
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 2.4, 2.6, 10.0, 11.0, 12.0]).unsqueeze(1)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    context = knn_indices(x, y, k=2, within_class=False)
    # 2.0's neighbours 2.4, 2.6: noise (2 of 2); 3.0's 2.6, 2.4: noise; 2.4's 2.6, 2.0: one of
    # two (danger); 2.6's 2.4, 3.0: danger; 1.0's 0.0, 2.0: safe
    assert in_danger(context, y).tolist() == [False, False, False, False, True, True,
                                              False, False, False]
    assert adasyn_density(context, y).tolist() == [0.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0]


def test_largest_remainder_by_hand_and_over_random_weights():
    assert largest_remainder(torch.tensor([1.0, 1.0, 2.0]), 5).tolist() == [1, 1, 3]
    assert largest_remainder(torch.tensor([0.0, 3.0]), 4).tolist() == [0, 4]
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 30, (1,), generator=g))
        w = torch.rand(n, generator=g) * (torch.rand(n, generator=g) > 0.3)
        w[0] += 0.01  # not all 0
        total = int(torch.randint(0, 500, (1,), generator=g))
        shares = largest_remainder(w, total)
        quota = w.double() * total / w.double().sum()
        assert int(shares.sum()) == total
        assert ((shares - quota).abs() < 1).all()
        assert (shares[w == 0] == 0).all()


def test_borderline_draws_only_danger_and_tops_every_class_up():
    x, y = _blobs(1)
    labels = torch.from_numpy(y)
    mixer = Mixer.preset("borderline_smote")
    mixer.start_epoch(0, labels=labels, inputs=torch.from_numpy(x), features=None)
    danger = mixer.anchor_weights() > 0
    plan = Resampled(build_sampler("instance", labels=labels), mode="oversample",
                     anchor_weights=mixer.anchor_weights)
    idx, synthetic = plan.epoch_plan(0, seed=0)
    assert len(idx) == len(plan) == 3 * 120
    assert danger[idx[synthetic]].all()
    assert torch.bincount(labels[idx]).tolist() == [120, 120, 120]


def test_a_class_with_no_anchor_in_danger_is_topped_up_from_all_of_it():
    # two far-apart classes: no example has a neighbour of another class
    x = torch.cat([torch.randn(30, 2, generator=torch.Generator().manual_seed(0)),
                   torch.randn(6, 2, generator=torch.Generator().manual_seed(1)) + 100])
    y = torch.tensor([0] * 30 + [1] * 6)
    mixer = Mixer.preset("borderline_smote", m_neighbors=4)
    mixer.start_epoch(0, labels=y, inputs=x, features=None)
    assert not mixer.anchor_weights().any()
    plan = Resampled(build_sampler("instance", labels=y), mode="oversample",
                     anchor_weights=mixer.anchor_weights)
    idx, synthetic = plan.epoch_plan(0, seed=0)
    assert torch.bincount(y[idx]).tolist() == [30, 30]
    assert set(idx[synthetic].tolist()) <= set(range(30, 36))


def test_the_rules_refuse_what_they_cannot_use():
    with pytest.raises(ParameterError, match="partner"):
        Mixer(anchors="borderline", partner="random")
    with pytest.raises(ParameterError, match="m_neighbors"):
        Mixer(anchors="adasyn", partner="knn_class", m_neighbors=0)
    with pytest.raises(ParameterError, match="neighbours"):
        Mixer(anchors="borderline", partner="knn_class", neighbours=NeighbourTable(k=5))
    assert Mixer.preset("smote").unused(["m_neighbors"]) == [
        ("m_neighbors", "anchors: borderline or adasyn")]
    with pytest.raises(ParameterError, match="anchor_weights"):
        Resampled(build_sampler("instance", labels=torch.tensor([0, 1])),
                  mode="class_balanced", anchor_weights=torch.ones(2))
    bad = Resampled(build_sampler("instance", labels=torch.tensor([0, 0, 1])),
                    mode="oversample", anchor_weights=torch.ones(5))
    with pytest.raises(ParameterError, match="anchor_weights"):
        bad.epoch_plan(0, seed=0)


def test_feature_space_tables_keep_their_context_through_a_resume():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, generator=g), torch.tensor([0] * 30 + [1] * 10)
    mixer = Mixer.preset("borderline_smote", space="feature", m_neighbors=4)
    mixer.start_epoch(0, labels=y, inputs=x, features=lambda: x * 2)
    state = mixer.table_state()
    assert torch.equal(state["context"], mixer.neighbours.context)
    again = Mixer.preset("borderline_smote", space="feature", m_neighbors=4)
    again.load_table_state(state, labels=y, inputs=x)
    assert torch.equal(again.anchor_weights(), mixer.anchor_weights())


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["Borderline-SMOTE", "ADASYN"])
def test_the_estimator_learns_with_each_rule(strategy):
    from sklearn.metrics import balanced_accuracy_score

    from tailmix.sklearn import TailmixClassifier

    X, y = _blobs(0, counts=(400, 80, 30), spread=0.6)
    X_test, y_test = _blobs(1, counts=(100, 100, 100), spread=0.6)
    clf = TailmixClassifier(strategy=strategy, epochs=15, batch_size=64, random_state=0)
    clf.fit(X.astype(np.float32), y)
    score = balanced_accuracy_score(y_test, clf.predict(X_test.astype(np.float32)))
    assert score > 0.75, score


@pytest.mark.parametrize("preset, m", [("borderline_smote", 10), ("adasyn", 5)])
def test_a_users_own_loop_with_each_rule(preset, m):
    """The README's recipe: a table with neighbours over all classes, the mixer on it, and
    the sampler reading the mixer's rule, in a plain DataLoader loop that learns."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from tailmix.data import IndexedDataset
    from tailmix.losses import build_loss

    torch.manual_seed(0)
    X_np, y_np = _blobs(0, counts=(300, 60, 20), spread=0.6)
    X, y = torch.tensor(X_np, dtype=torch.float32), torch.from_numpy(y_np)
    counts = torch.bincount(y)
    table = NeighbourTable(k=5, within_class=True, m_neighbors=m).fit(X, y)
    mixer = Mixer.preset(preset, class_counts=counts, neighbours=table)
    sampler = Resampled(build_sampler("instance", labels=y, seed=0), mode="oversample",
                        anchor_weights=mixer.anchor_weights, quota=mixer.anchor_quota)
    loader = DataLoader(IndexedDataset(TensorDataset(X, y)), batch_size=64, sampler=sampler)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = build_loss("ce", class_counts=counts)
    seen = torch.zeros(len(y), dtype=torch.long)
    for epoch in range(8):
        sampler.set_epoch(epoch)
        for xb, yb, index, synthetic in loader:
            seen += torch.bincount(index[synthetic], minlength=len(y))
            x_mix, target = mixer(xb, yb, index, synthetic)
            loss = loss_fn(model(x_mix), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    weights = mixer.anchor_weights()
    for c in (1, 2):  # the topped-up classes: only anchors of weight above 0 were mixed
        members = y == c
        assert (weights[members] > 0).any()
        assert seen[members & (weights == 0)].sum() == 0
        assert seen[members].sum() == 8 * (counts[0] - counts[c])
    X_t, y_t = _blobs(1, counts=(100, 100, 100), spread=0.6)
    with torch.no_grad():
        pred = model(torch.tensor(X_t, dtype=torch.float32)).argmax(1).numpy()
    recall = [(pred[y_t == c] == c).mean() for c in range(3)]
    assert np.mean(recall) > 0.75, recall


class _ConstantSteps(np.random.RandomState):
    """Every uniform draw at 0.8 of its range: a synthetic example then names its anchor,
    its neighbour and the step imbalanced-learn took toward it."""

    def uniform(self, low=0.0, high=1.0, size=None):
        return np.full(size, low + 0.8 * (high - low))


@pytest.mark.parametrize("seed", range(4))
def test_borderline_2_goes_half_as_far_toward_another_class(seed):
    """imbalanced-learn's kind="borderline-2": from an example in danger toward one of its
    k nearest neighbours over all classes. Every synthetic example it makes lies on such a
    segment of the mixer's table. Toward another class the paper's step is drawn from
    [0, 0.5), as the mixer's share is; imbalanced-learn multiplies a draw from [0, 1) by
    one from [0, 0.5) (0.8 x 0.4 here)."""
    X, y = _blobs(seed)
    sampler = imblearn.over_sampling.BorderlineSMOTE(kind="borderline-2", m_neighbors=10,
                                                     k_neighbors=5,
                                                     random_state=_ConstantSteps(seed))
    X_res, _ = sampler.fit_resample(X, y)
    labels = torch.from_numpy(y)
    mixer = Mixer.preset("borderline_smote2")
    mixer.start_epoch(0, labels=labels, inputs=torch.from_numpy(X), features=None)
    danger = mixer.anchor_weights().numpy() > 0
    table = mixer.neighbours.indices.numpy()
    made = set()
    for a in np.flatnonzero(danger & (y != 0)):
        for n in table[a]:
            step = 0.8 if y[n] == y[a] else 0.8 * 0.4
            made.add(tuple(np.round(X[a] + step * (X[n] - X[a]), 9)))
    new = X_res[len(X):]
    assert len(new) and all(tuple(np.round(p, 9)) in made for p in new)
    # the mixer: the share toward a partner of another class drawn from [0, 0.5)
    g = torch.Generator().manual_seed(seed)
    anchors = torch.from_numpy(np.flatnonzero(danger)).repeat(40)
    x = torch.from_numpy(X)
    fetched = []

    def fetch(index):
        fetched.append(index)
        return x[index]

    x_mix, target = mixer(x[anchors], labels[anchors], anchors, generator=g, fetch=fetch)
    partner = fetched[0]
    assert all(int(p) in table[int(a)] for a, p in zip(anchors, partner, strict=True))
    step = x[partner] - x[anchors]
    lam = ((x_mix - x[anchors]) * step).sum(1) / step.pow(2).sum(1)
    other = labels[partner] != labels[anchors]
    assert other.any() and (~other).any()
    assert lam[other].max() < 0.5 and lam[~other].max() > 0.9
    assert bool((target.argmax(1) == labels[anchors]).all())  # the anchor's label
