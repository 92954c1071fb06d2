"""Progressive learning schedules: the paper's Table 6 / Algorithm 1, the official code's, and the baselines."""
import pytest

from ev2lib.errors import ConfigError
from ev2lib.progressive import (ProgressiveSchedule, RandomResizeSchedule, fixed_schedule, official_schedule,
                                paper_schedule, progressive_resize)


def col(schedule, field):
    return [getattr(s, field) for s in schedule.phases()]


def test_official_schedule_s():
    s = official_schedule("efficientnetv2_s")
    assert col(s, "image_size") == [171, 214, 257, 300]  # the first phase is not at 128
    assert col(s, "randaug_magnitude") == pytest.approx([5, 20 / 3, 25 / 3, 10], abs=1e-5)
    assert col(s, "dropout") == [0.2] * 4  # never scheduled in the code
    assert col(s, "mixup_alpha") == [0] * 4 and col(s, "cutmix_alpha") == [0] * 4


def test_official_schedule_m_and_l():
    m = official_schedule("efficientnetv2_m")
    assert col(m, "image_size") == [192, 256, 320, 384]
    assert col(m, "randaug_magnitude") == pytest.approx([5, 25 / 3, 35 / 3, 15], abs=1e-5)
    assert col(m, "mixup_alpha") == pytest.approx([0, 0.2 / 3, 0.4 / 3, 0.2], abs=1e-5)
    assert col(m, "cutmix_alpha") == col(m, "mixup_alpha")  # CutMix ramps with mixup in the code
    assert col(m, "dropout") == [0.3] * 4
    lg = official_schedule("efficientnetv2_l")
    assert col(lg, "image_size") == [192, 256, 320, 384] and col(lg, "randaug_magnitude") == [5, 10, 15, 20]
    assert col(lg, "mixup_alpha")[-1] == 0.5 and col(lg, "dropout") == [0.4] * 4


@pytest.mark.parametrize("variant, size, ra, mix, drop", [
    ("efficientnetv2_s", (128, 300), (5, 15), (0, 0), (0.1, 0.3)),
    ("efficientnetv2_m", (128, 380), (5, 20), (0, 0.2), (0.1, 0.4)),
    ("efficientnetv2_l", (128, 380), (5, 25), (0, 0.4), (0.1, 0.5)),
])
def test_paper_table6_endpoints(variant, size, ra, mix, drop):
    s = paper_schedule(variant)
    first, last = s.phase(0), s.phase(3)
    assert (first.image_size, last.image_size) == size
    assert (first.randaug_magnitude, last.randaug_magnitude) == ra
    assert (first.mixup_alpha, last.mixup_alpha) == mix
    assert (first.dropout, last.dropout) == pytest.approx(drop)
    assert all(x.cutmix_alpha == 0 for x in s.phases())  # the paper mentions only mixup


def test_algorithm1_linear_interpolation_and_rounding():
    s = paper_schedule("efficientnetv2_s")
    assert col(s, "image_size") == [128, 184, 240, 300]  # 185.3 and 242.7 rounded to multiples of 8
    assert col(s, "dropout") == pytest.approx([0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3], abs=1e-5)
    exact = paper_schedule("efficientnetv2_m", size_multiple=1)
    assert col(exact, "image_size") == [128, 212, 296, 380]


def test_phases_cover_all_epochs_in_order():
    s = paper_schedule("efficientnetv2_s", total_epochs=350)
    assert [s.phase_index(e) for e in (0, 86, 87, 174, 175, 349)] == [0, 0, 1, 1, 2, 3]
    bounds = [(x.start_epoch, x.end_epoch) for x in s.phases()]
    assert bounds[0][0] == 0 and bounds[-1][1] == 350
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert s.phase_at(349) == s.phase(3)


def test_baselines():
    f = fixed_schedule(10, 224, randaug=10, dropout=0.2)
    assert f.num_phases == 1 and f.phase_at(9).image_size == 224 and f.phase_at(0).randaug_magnitude == 10
    p = progressive_resize(4, 8, (128, 256), randaug=15, dropout=0.3)
    assert col(p, "image_size") == [128, 168, 216, 256] and set(col(p, "randaug_magnitude")) == {15}
    r = RandomResizeSchedule(16, (128, 256), every=4, adaptive=True, randaug=(5, 15), seed=1)
    assert r.num_phases == 4 and [r.phase_index(e) for e in (0, 3, 4, 15)] == [0, 0, 1, 3]
    for st in r.phases():
        assert 128 <= st.image_size <= 256 and st.image_size % 8 == 0
        assert st.randaug_magnitude == pytest.approx(5 + 10 * (st.image_size - 128) / 128, abs=1e-5)
    vanilla = RandomResizeSchedule(16, (128, 256), every=4, adaptive=False, randaug=(5, 15), seed=1)
    assert col(vanilla, "image_size") == col(r, "image_size") and set(col(vanilla, "randaug_magnitude")) == {15}


def test_bad_schedules():
    with pytest.raises(ConfigError, match="num_phases"):
        ProgressiveSchedule(5, 3)
    with pytest.raises(ConfigError, match="Table 6 covers"):
        paper_schedule("efficientnetv2_xl")
    with pytest.raises(ConfigError, match="epoch 350 is outside"):
        paper_schedule("efficientnetv2_s").phase_at(350)
    with pytest.raises(ConfigError, match="non-negative"):
        ProgressiveSchedule(4, 8, randaug=(-1, 5))


def test_train_cli_builds_named_schedules():
    from ev2lib.progressive import make_schedule
    from ev2lib.train import _parser

    s = make_schedule("paper", 8, sizes=(16, 32))
    assert col(s, "image_size") == [16, 24, 24, 32] and s.total_epochs == 8  # 21.3 / 26.7 rounded to 8s
    assert col(make_schedule("official", 8, "efficientnetv2_m"), "image_size") == [192, 256, 320, 384]
    assert isinstance(make_schedule("random-resize", 16), RandomResizeSchedule)
    args = _parser().parse_args(["--progressive", "paper", "--progressive-sizes", "16", "32"])
    assert args.progressive == "paper" and args.progressive_sizes == [16, 32]
    with pytest.raises(ConfigError, match="unknown progressive schedule"):
        make_schedule("cosine", 8)
