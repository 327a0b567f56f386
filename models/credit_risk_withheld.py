"""The credit-risk reference rows scored as FinQuantum scores a customer whose shared bank data
holds no checking account, or no savings account: that feature at the code least favourable to
the applicant, the combination of codes with the highest probability of default when both are
missing (finquantum/src/scoring.rs, ``withheld``).

Reads ``credit-risk/1/reference.json`` and ``model.onnx`` and writes
``credit-risk/1/reference-withheld.json``: for each reference row whose ``checking_status`` or
``savings_status`` is 0 (no such account), the features the service stores and onnxruntime's
probability for them. ``make models`` runs it after ``train_credit_risk.py``; on its own, with
any Python that has onnxruntime (``models/.venv``, or ``.cache/bench-venv`` after ``make bench``)::

    models/.venv/bin/python models/credit_risk_withheld.py
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import onnxruntime

MODEL_DIR = Path(__file__).resolve().parent / "credit-risk" / "1"
# Each account feature's codes, in the order the service tries them.
CODES = {"checking_status": [0.0, 1.0, 2.0, 3.0], "savings_status": [0.0, 1.0, 2.0, 3.0, 4.0]}


def main() -> None:
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    names = [feature["name"] for feature in manifest["features"]]
    reference = json.loads((MODEL_DIR / "reference.json").read_text())
    session = onnxruntime.InferenceSession(str(MODEL_DIR / "model.onnx"), providers=["CPUExecutionProvider"])

    def probability(features: dict[str, float]) -> float:
        row = np.array([[features[name] for name in names]], dtype=np.float32)
        return float(session.run(["probabilities"], {"input": row})[0][0][1])

    rows = []
    for index, row in enumerate(reference["rows"]):
        withheld = [name for name in CODES if row["features"][name] == 0.0]
        if not withheld:
            continue
        # The first combination with the highest probability, the last feature's codes innermost.
        highest = None
        for codes in itertools.product(*(CODES[name] for name in withheld)):
            features = {**row["features"], **dict(zip(withheld, codes))}
            scored = probability(features)
            if highest is None or scored > highest[0]:
                highest = (scored, features)
        rows.append({"row": index, "withheld": withheld, "features": highest[1], "onnx_probability": highest[0]})
    out = MODEL_DIR / "reference-withheld.json"
    out.write_text(json.dumps({"model": reference["model"], "version": reference["version"], "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
