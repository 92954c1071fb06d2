"""Architecture numbers no hardware changes, at the official image sizes (§3.3; Tables 4, 7, 10, 11; Figures 3, 5):
parameters, MACs, the plain compound rule against the released M and L, V1 against torchvision, V2 against V1."""
from __future__ import annotations

import numpy as np
import torch
from torchvision import models as tvm

from ..configs import get_config
from ..model import create_model
from ..scaling import V1_COEFFICIENTS, compare_stages, derive_v2
from ..summary import count_macs, count_params

# google/automl efficientnetv2 README: (parameters in M, FLOPs in B: multiply-adds) of the ImageNet checkpoints.
README = {f"efficientnetv2_{k}": v for k, v in {"b0": (7.1, 0.72), "b1": (8.1, 1.2), "b2": (10.1, 1.7),
          "b3": (14.4, 3.0), "s": (21.5, 8.4), "m": (54.1, 24.7), "l": (119.5, 56.3)}.items()}
TABLE10_PROSE = {"parameters": 0.17, "FLOPs": 0.37}  # §6.1: V2-M "reduces parameters by 17% and FLOPs by 37%" vs B7

def short(name: str) -> str:
    """``efficientnet_b7`` -> "B7", ``efficientnetv2_s`` -> "V2-S"."""
    return ("V2-" if name.startswith("efficientnetv2") else "") + name.rsplit("_", 1)[-1].upper()

def gmacs(config, size: int | None = None) -> float:
    """Multiply-accumulates (G, the paper's "FLOPs") of one image at ``size`` (default: the evaluation size)."""
    with torch.device("meta"):
        return count_macs(m := create_model(config), size or m.config.eval_size) / 1e9

def costs(names=(*V1_COEFFICIENTS, *README)) -> list[dict]:
    """Parameters and GMACs at the official final training and evaluation sizes, the README's values beside them."""
    return [dict(model=short(c.name), family="V2" if "v2" in c.name else "V1", **{
        "parameters (M)": count_params(c) / 1e6, "train size (px)": c.train_size, "eval size (px)": c.eval_size,
        "GMACs at train size": gmacs(c, c.train_size), "GMACs at eval size": gmacs(c),
        "README parameters (M)": README.get(c.name, (None,))[0], "README FLOPs (B)": README.get(c.name, (0, None))[1]})
        for c in map(get_config, names)]

def by_role(frame):
    """Stage labels by role ("stem", "1".."7", "head"): S's head is not drawn beside M's and L's stage 7."""
    import pandas as pd
    last = frame.groupby("variant")["stage"].transform("max")
    labels = ["stem" if s == 0 else "head" if s == m else str(s) for s, m in zip(frame["stage"], last)]
    return frame.assign(stage=pd.Categorical(labels, ["stem", *map(str, range(1, last.max())), "head"], ordered=True))

def table10(v1: str = "efficientnet_b7", v2: str = "efficientnetv2_m") -> dict:
    """Table 10's architecture columns at each model's evaluation size, and V2-M's reductions against B7."""
    (pb, fb), (pm, fm) = rows = [(count_params(n) / 1e6, gmacs(n)) for n in (v1, v2)]
    return {"rows": dict(zip(map(short, (v1, v2)), rows)), "parameters": 1 - pm / pb, "FLOPs": 1 - fm / fb}

def against_v1(rows, y: str, x: str = "parameters (M)", more: str = "more", less: str = "less") -> dict:
    """``y`` of each V2 model over V1's at the same ``x`` (V1 interpolated log-log; V2 outside V1's range left out) and
    ``more`` / ``less`` / "no clear difference" beyond the V2 model's and V1's interpolated ``spread`` (0 if absent)."""
    v1 = sorted((r[x], r[y], r.get("spread", 0.0)) for r in rows if r["family"] == "V1")
    lx, ly, noise = np.log([a for a, _, _ in v1]), np.log([b for _, b, _ in v1]), [c for *_, c in v1]
    out = {}
    for r in (r for r in rows if r["family"] == "V2" and lx[0] <= np.log(r[x]) <= lx[-1]):
        ratio = float(r[y] / np.exp(np.interp(np.log(r[x]), lx, ly)))
        band = 1e-9 + r.get("spread", 0.0) + np.interp(np.log(r[x]), lx, noise)
        out[r["model"]] = ratio, more if ratio > 1 + band else less if ratio < 1 - band else "no clear difference"
    return out

def throughput(record: dict) -> list[dict]:
    """A bench record's runs: model, family, parameters, median training images/s, the repeats' relative spread."""
    return [{"model": short(r["model"]), "family": "V2" if "v2" in r["model"] else "V1", "parameters (M)": r["params"]
             / 1e6, "train img/s": (t := r["train_img_s"])["median"], "spread": (t["max"] - t["min"]) / t["median"]}
            for r in record["data"]["runs"]]

def v1_check(names=tuple(V1_COEFFICIENTS)[1:]) -> list[dict]:
    """B1-B7 scaled from B0 by ev2lib against torchvision's builds: same stem, stages and head?, and parameters."""
    shape = lambda m: (m.features[0][0].out_channels, m.features[-1][0].out_channels,
                       [(len(st), st[-1].block[-1][0].out_channels) for st in m.features[1:-1]])
    with torch.device("meta"):
        pairs = [(n, create_model(n), getattr(tvm, n)(weights=None)) for n in names]
    return [{"model": short(n), "same stem, stages and head": shape(a) == shape(b), "parameters (ev2lib)":
             count_params(a), "parameters (torchvision)": count_params(b)} for n, a, b in pairs]

def plain_rule(targets=("s", "m", "l"), base: str = "efficientnetv2_b0") -> list[dict]:
    """The plain compound rule from ``base`` (code comments' coefficients, 480 cap) against the released models."""
    pairs = [(derive_v2(o, get_config(base)), o) for o in (get_config(f"efficientnetv2_{t}") for t in targets)]
    return [{"model": short(o.name), "plain rule (M)": count_params(d) / 1e6, "released (M)": count_params(o) / 1e6,
             "layers missing": {r["stage"]: -r["layer diff"] for r in compare_stages(d, o) if r["layer diff"] < 0}}
            for d, o in pairs]
