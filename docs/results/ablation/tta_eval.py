"""Post-hoc flip averaging on the ablation runs' validation side (the 'test' side of
split-ablation.csv). Ran against the project at commit aa94129 (PYTHONPATH), whose API it uses."""

import json
import os
import sys

from brainmri.checkpoint import load_model
from brainmri.data import load_split
from brainmri.inference import score

out = json.load(open("ablation/tta.json")) if os.path.exists("ablation/tta.json") else {}
for name in sys.argv[1:]:
    model, card = load_model(f"ablation/{name}/checkpoints/best.pt")
    x, y, _ = load_split("prepared-256", f"ablation/{name}/split.csv", "test", size=card["image_size"])
    out[name] = {f: score(model, x, y, flip=f) for f in (False, True)}
    print(name, {f: round(v["accuracy"], 4) for f, v in out[name].items()}, flush=True)
json.dump(out, open("ablation/tta.json", "w"), indent=2)
