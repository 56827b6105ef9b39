"""The report's answer (``pgnm_monai.experiments.answer``): verdicts and sentences computed from paired probe
deltas under the multiplicity rule (Holm over every cell), its forest plot, and the comparison of two runs'
verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pgnm_monai.arms import learned_policy_arms
from pgnm_monai.experiments.answer import (
    answer_markdown,
    pairwise_deltas,
    plot_forest,
    read_probe_runs,
    regime_markdown,
    verdicts,
)
from pgnm_monai.experiments.statistics import bootstrap_interval, bootstrap_test, holm

ARM_SHIFT = {"none": 0.0, "pgnm-reinforce": 0.1, "frozen_policy": 0.1, "trivialaugment": 0.3}


def probe_rows(shift: dict[str, float], tasks=("taskA", "taskB"), seeds=3, episodes=30, probe="linear_bn"):
    """Probe rows where every arm scores a common per-(seed, episode) value plus its own shift."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.6, size=(len(tasks), seeds, episodes))
    rows = []
    for t, task in enumerate(tasks):
        for arm, delta in shift.items():
            for s in range(seeds):
                for e in range(episodes):
                    noise = 0.01 * np.sin(7 * s + 3 * e + len(arm))  # small, paired differences not all equal
                    score = base[t, s, e] + delta + noise
                    rows.append({"arm": arm, "pretrain_seed": s, "task": task, "n": 16, "episode": e,
                                 "probe": probe, "macro_f1": score})  # fmt: skip
    return pd.DataFrame(rows)


def test_verdicts_and_sentences_come_from_the_numbers():
    pairs = pairwise_deltas(probe_rows(ARM_SHIFT), "linear_bn", n_boot=300)
    assert set(pairs["arm"]) == {"pgnm-reinforce"}  # the frozen policy is a comparator, not a learned arm
    assert set(pairs["comparator"]) == {"none", "frozen_policy", "trivialaugment"}
    table = verdicts(pairs).set_index("comparator")
    assert table.loc["none", ["wins", "losses", "verdict"]].tolist() == [2, 0, "better"]
    assert table.loc["frozen_policy", "verdict"] == "no difference"
    assert table.loc["trivialaugment", ["wins", "losses", "verdict"]].tolist() == [0, 2, "worse"]
    assert abs(table.loc["none", "mean delta"] - 0.1) < 0.01 and table.loc["none", "largest loss"] == ""
    text = answer_markdown(pairs, "linear_bn")
    assert "**`pgnm-reinforce` beats `none`** (wins, no loss), and not the others." in text
    assert "`pgnm-reinforce` against `trivialaugment`: worse on 2 of 2 cells" in text
    assert "`pgnm-reinforce` against `frozen_policy`: no difference on any of the 2 task x N cells" in text
    # other numbers, other sentences
    text = answer_markdown(pairwise_deltas(probe_rows({**ARM_SHIFT, "pgnm-reinforce": 0.5}), "linear_bn"), "linear_bn")
    assert "**`pgnm-reinforce` beats every other arm** on at least one cell and loses on none." in text
    text = answer_markdown(pairwise_deltas(probe_rows({**ARM_SHIFT, "pgnm-reinforce": -0.2}), "linear_bn"), "linear_bn")
    assert "**`pgnm-reinforce` beats no other arm**" in text


def test_two_runs_verdicts_side_by_side(tmp_path):
    here = probe_rows(ARM_SHIFT, probe="linear")
    reference = probe_rows({"none": 0.0, "pgnm-reinforce": 0.0, "frozen_policy": 0.1}, probe="linear")
    reference.to_csv(tmp_path / "probe_runs.csv.gz", index=False)
    reference = read_probe_runs(tmp_path)
    text = regime_markdown(here, reference, "MedNIST", n_boot=300)
    assert "on the probe they share (`linear`), each run's cells Holm-adjusted" in text
    assert "over its own answer on that probe: 0 of 2 verdicts are the same" in text
    assert "**Probes:**" not in text  # the answer and both sides on the same probe: nothing to say
    assert "`pgnm-reinforce` against `none`: no difference in MedNIST, better here" in text
    assert "`pgnm-reinforce` against `frozen_policy`: worse in MedNIST, no difference here" in text
    assert "2 of 2 verdicts are the same" in regime_markdown(here, here[here["arm"] != "frozen_policy"], "itself", 300)
    # this run's answer on another probe (the reference lacks it): said where the comparison is, with what differs
    bn = probe_rows({**ARM_SHIFT, "pgnm-reinforce": 0.0}, probe="linear_bn")
    answered = pairwise_deltas(bn, "linear_bn", n_boot=300)
    text = regime_markdown(pd.concat([here, bn]), reference, "MedNIST", 300, answer_pairs=answered)
    assert (
        "**Probes:** both sides here use `linear`, the probe both runs have; this run's answer above uses "
        "`linear_bn`, and MedNIST's own answer uses `linear`. So the verdicts of this run below can differ from the "
        "answer's: `pgnm-reinforce` against `none` (no difference in the answer, better on `linear`); "
        "`pgnm-reinforce` against `frozen_policy` (worse in the answer, no difference on `linear`)."
    ) in text


def test_learned_policy_arms_leave_out_the_frozen_policy_and_other_mechanisms():
    arms = ["cutmix", "frozen_policy", "pgnm-paper", "none", "pgnm-reinforce", "random_mask"]
    assert learned_policy_arms(arms) == ["pgnm-paper", "pgnm-reinforce"]


def test_the_curves_say_whether_the_baseline_saturated_and_the_policy_settled():
    from pgnm_monai.experiments.report import convergence_sentences

    epochs = range(1, 7)
    rows = [
        {"arm": "none", "seed": s, "epoch": e, "val_macro_f1": 0.5 + 0.05 * e + 0.01 * s}
        for s in (0, 1)
        for e in epochs
    ]
    rows += [{"arm": "pgnm-reinforce", "seed": 0, "epoch": e, "kl_to_init": 10.0 * min(e, 4)} for e in epochs]
    rows += [{"arm": "frozen_policy", "seed": 0, "epoch": e, "kl_to_init": 0.0} for e in epochs]
    text = convergence_sentences(pd.DataFrame(rows))[0]
    assert "`none`'s validation macro-F1 (mean over pretrain seeds) ends at 0.805 after 6 epochs" in text
    assert "best 0.805 at epoch 6: not saturated (below 0.99)." in text
    assert "`pgnm-reinforce`'s KL to its initial policy: 40 at the last epoch, 0.0% change" in text
    assert "over the last two epochs: settled" in text
    assert "frozen_policy" not in text
    rows = [{**r, "kl_to_init": 10.0 * r["epoch"]} if r["arm"] == "pgnm-reinforce" else r for r in rows]
    rows = [{**r, "val_macro_f1": 1.0} if r["arm"] == "none" else r for r in rows]
    text = convergence_sentences(pd.DataFrame(rows))[0]
    assert "best 1.000 at epoch 1: saturated." in text and "33.3% change over the last two epochs: still moving" in text


SIX_ARMS = ("none", "pgnm-reinforce", "frozen_policy", "random_mask", "trivialaugment", "cutmix")


def eighty_cells(marginal: float = 0.0045, strong: float = 0.1, seeds: int = 4, episodes: int = 20) -> pd.DataFrame:
    """Probe rows of one learned arm against 5 comparators on 8 tasks x 2 N (80 cells): no difference anywhere but
    one marginal cell (against ``none``, task0 N=16: interval just above 0) and ``cutmix`` below by ``strong``."""
    rng = np.random.default_rng(0)
    spread = np.array([-1.5, -0.5, 0.5, 1.5])[:seeds, None] * 0.004 + 0.001 * np.cos(np.arange(episodes))[None, :]
    rows = []
    for task in [f"task{i}" for i in range(8)]:
        for n in (16, 64):
            base = rng.uniform(0.4, 0.6, size=(seeds, episodes))
            for arm in SIX_ARMS:
                score = base - strong if arm == "cutmix" else base
                if arm == "none" and (task, n) == ("task0", 16):
                    score = base - marginal - spread
                rows += [{"arm": arm, "pretrain_seed": s, "task": task, "n": n, "episode": e, "probe": "linear_bn",
                          "macro_f1": score[s, e]} for s in range(seeds) for e in range(episodes)]  # fmt: skip
    return pd.DataFrame(rows)


def test_a_single_marginal_cell_among_80_is_not_a_win_and_a_strong_effect_still_is(tmp_path):
    pairs = pairwise_deltas(eighty_cells(), "linear_bn")
    assert len(pairs) == 80 and pairs["delta_p_holm"].ge(pairs["delta_p"]).all()
    cell = pairs[(pairs["comparator"] == "none") & (pairs["task"] == "task0") & (pairs["N"] == 16)].iloc[0]
    assert 0 < cell["delta_low"] < 0.001 and 0.01 < cell["delta_p"] < 0.05  # marginal: interval just above 0
    assert cell["result_interval"] == "win" and cell["result"] == "tie" and cell["delta_p_holm"] == 1.0
    table = verdicts(pairs).set_index("comparator")
    assert table.loc["none", ["wins", "interval wins", "verdict"]].tolist() == [0, 1, "no difference"]
    assert table.loc["cutmix", ["wins", "losses", "verdict"]].tolist() == [16, 0, "better"]
    text = answer_markdown(pairs, "linear_bn", figure="answer_forest.png")
    assert "Holm-adjusted over all 80 cells of this answer (5 comparisons x 16 task x N cells), is below 0.05" in text
    assert "`pgnm-reinforce` against `none`: no difference on any of the 16 task x N cells; 1 more cell with" in text
    assert "**`pgnm-reinforce` beats `cutmix`** (wins, no loss), and not the others." in text
    assert "p-value (6400 replicates per cell: an adjusted p cannot be below 0.013, written `≤`)" in text
    assert ": +0.100 [+0.100, +0.100], Holm p ≤ 0.013" in text and "Holm p = 1.000" in text
    assert "![every cell of the answer, with its interval](answer_forest.png)" in text
    # the same cell alone (a family of 1) is a win: the adjustment, not the data, made the difference
    alone = eighty_cells()
    alone = alone[alone["arm"].isin(["none", "pgnm-reinforce"]) & (alone["task"] == "task0") & (alone["n"] == 16)]
    assert pairwise_deltas(alone, "linear_bn")["result"].tolist() == ["win"]
    plot_forest(pairs[pairs["comparator"].isin(["none", "cutmix"])], tmp_path / "answer_forest.png")
    assert (tmp_path / "answer_forest.png").stat().st_size > 10_000


def test_bootstrap_p_value_and_holm():
    rng = np.random.default_rng(1)
    values = 0.01 + 0.02 * rng.standard_normal((4, 30))
    mean, low, high, p = bootstrap_test(values, 500, 3)
    assert (mean, low, high) == bootstrap_interval(values, 500, 3)  # the same replicates make both
    assert bootstrap_test(values, 500, 3) == (mean, low, high, p) and 0 < p < 1
    assert bootstrap_test(np.full((3, 5), 0.2), 400, 0)[3] == 1 / 400  # every replicate above 0: the floor
    assert bootstrap_test(np.zeros((3, 5)), 400, 0)[3] == 1.0
    # Holm by hand: sorted p x (m, m-1, ...), running maximum, capped at 1; NaN left out of the family
    adjusted = holm([0.01, 0.04, np.nan, 0.03, 0.5])
    np.testing.assert_allclose(adjusted, [0.04, 0.09, np.nan, 0.09, 0.5])
