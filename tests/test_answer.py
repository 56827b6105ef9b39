"""The report's answer (``pgnm_monai.experiments.answer``): verdicts and sentences computed from paired probe
deltas, and the comparison of two runs' verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pgnm_monai.arms import learned_policy_arms
from pgnm_monai.experiments.answer import (
    answer_markdown,
    pairwise_deltas,
    read_probe_runs,
    regime_markdown,
    verdicts,
)

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
    assert "on the probe they share (`linear`): 0 of 2 verdicts are the same" in text
    assert "`pgnm-reinforce` against `none`: no difference in MedNIST, better here" in text
    assert "`pgnm-reinforce` against `frozen_policy`: worse in MedNIST, no difference here" in text
    assert "2 of 2 verdicts are the same" in regime_markdown(here, here[here["arm"] != "frozen_policy"], "itself", 300)


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
