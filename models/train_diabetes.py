#!/usr/bin/env python3
"""Train the AigroNova "diabetes-progression" model and export it to ONNX.

This script is the single, reproducible source of everything under
``models/diabetes-progression/1/``:

* ``model.onnx``     -- an XGBoost regressor converted with onnxmltools
                        (target opset 15).  Input ``input`` float32 [N, 10];
                        output ``variable`` float32 [N, 1], the predicted
                        disease progression one year after baseline.
* ``manifest.json``  -- metadata read by the Rust model loader (feature
                        names and ranges, checksum, metrics, risk bands ...).
* ``reference.json`` -- three held-out rows with the expected predictions,
                        used by the Rust side to check its inference against
                        Python's.

Data: scikit-learn's bundled diabetes data set (``load_diabetes()``, Efron,
Hastie, Johnstone and Tibshirani 2004): 442 patients, 10 baseline features
(age, sex, bmi, bp and six blood serum measurements s1..s6), target = a
quantitative measure of disease progression one year after baseline (25 to
346 in the data).  Nothing is downloaded.

Features: scikit-learn's default *scaled* copy.  Each column is mean centred
and divided by (standard deviation x sqrt(n_samples)), so its sum of squares
is 1 and the values are small numbers around 0, negative as well as
positive (about -0.14 to 0.20).  Callers must send the features on that
scale, not in raw units (years, kg/m^2, mmHg, mg/dL ...).

Determinism: fixed random seeds, single-threaded training, and fixed ONNX
metadata (no timestamps, no random graph name), so running the script twice
with the package versions pinned in ``models/requirements.txt`` produces
byte-identical files.  ``models/check_reproducible.sh`` (``make models``)
relies on this.

Usage (from the repository root)::

    models/.venv/bin/python models/train_diabetes.py
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import xgboost
from sklearn.datasets import load_diabetes
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

import common
from common import INPUT_NAME, log, rnd

# --------------------------------------------------------------------------
# Constants: everything that defines the model lives here.  The settings
# shared by all models (ONNX opset and names, rounding, binning) are in
# models/common.py.
# --------------------------------------------------------------------------

MODEL_NAME = "diabetes-progression"
MODEL_VERSION = "1"
OUT_DIR = common.MODELS_DIR / MODEL_NAME / MODEL_VERSION

SEED = 42
TEST_SIZE = 0.25

# scikit-learn's names and order of the 10 features (checked at load time).
EXPECTED_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]

# Small, deterministic XGBoost settings (n_jobs=1 avoids any thread-order
# effects; "hist" is the default exact-reproducible CPU tree method; no row
# or column subsampling).  With only 331 training rows the trees are kept
# shallow (depth 2: main effects and pairwise interactions), the learning
# rate low and min_child_weight=5 (no leaf fitted on fewer than 5 patients),
# to limit over-fitting.  These were fixed a priori and only sanity-checked
# with 5-fold cross-validation on the training split (RMSE ~60 against ~63
# for the breast-cancer settings); the held-out rows played no part.
XGB_PARAMS = dict(
    n_estimators=300,
    max_depth=2,
    learning_rate=0.03,
    min_child_weight=5,
    objective="reg:squarederror",
    random_state=SEED,
    n_jobs=1,
    tree_method="hist",
)

# Name of the regressor's single ONNX output.
VALUE_OUTPUT = "variable"

# Maximum allowed |ONNX - XGBoost| difference of the predictions, in target
# units.  Both run in float32 but sum the 300 trees in a different order, so
# they differ by a few float32 ulps of values around 150 (ulp ~1.5e-5).
TOLERANCE = 1e-3

# Valid range = this factor x the smallest / largest observed value.  The
# scaled features are centred on 0 (every feature has a negative minimum and
# a positive maximum), so this widens the observed range 4-fold on each side
# of 0 and rejects only values that cannot come from the same scaling.
VALID_RANGE_FACTOR = 4.0

# Risk bands in target units (disease progression one year after baseline;
# 25..346 in the data).  A prediction v falls into the first band whose
# `upper` is greater than v.  100 and 200 are round numbers close to the
# tertiles of the target (33.3 % and 66.7 % quantiles: 100 and 184), so
# about a third of the patients fall into each band (33 % / 38 % / 29 % of
# the 442 observed targets).  They are a relative ranking within this
# cohort, not clinical thresholds.  The last band's upper bound is a large
# finite number (JSON has no infinity).
RISK_BANDS = [
    {"name": "low", "upper": 100.0},
    {"name": "moderate", "upper": 200.0},
    {"name": "high", "upper": 1e9},
]

ONNX_GRAPH_NAME = "diabetes_progression_xgboost"
ONNX_DOC_STRING = (
    "AigroNova diabetes-progression v1: XGBoost regressor on scikit-learn's diabetes data "
    "(Efron et al. 2004, scaled features). variable[:, 0] = predicted disease progression "
    "one year after baseline. Generated by models/train_diabetes.py."
)


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    common.log_versions()

    # ---------------------------------------------------------------- data
    # scaled=True is scikit-learn's default: the features are mean centred
    # and scaled (sum of squares 1 per column).
    log("loading scikit-learn load_diabetes() ...")
    data = load_diabetes(scaled=True)
    X = np.asarray(data.data, dtype=np.float64)  # (442, 10)
    y = np.asarray(data.target, dtype=np.float64)  # disease progression, 25..346
    feature_names = [str(n) for n in data.feature_names]
    assert X.shape == (442, 10), X.shape
    if feature_names != EXPECTED_FEATURES:
        raise SystemExit(f"ERROR: unexpected feature names {feature_names}")
    col_min = X.min(axis=0)
    col_max = X.max(axis=0)
    if not ((col_min < 0).all() and (col_max > 0).all()):
        raise SystemExit(
            "ERROR: some feature is not centred on 0; valid_range_rule (min = 4 x smallest, "
            "max = 4 x largest) would not contain the data"
        )
    log(f"rows={X.shape[0]} features={X.shape[1]} target: min={y.min():g} mean={y.mean():.2f} max={y.max():g}")

    # Plain random split (no stratification: the target is continuous).
    X_train, X_test, y_train, y_test, idx_test = common.split_rows(X, y, TEST_SIZE, SEED, stratify=False)

    # XGBoost works in float32 internally and the ONNX input is float32, so
    # train and predict on float32 copies to keep both paths identical.
    X_train32 = X_train.astype(np.float32)
    X_test32 = X_test.astype(np.float32)

    # -------------------------------------------------------------- training
    log(f"training xgboost.XGBRegressor({XGB_PARAMS}) ...")
    reg = xgboost.XGBRegressor(**XGB_PARAMS)
    reg.fit(X_train32, y_train)

    pred_test = np.asarray(reg.predict(X_test32))  # (n,) float32
    pred64 = pred_test.astype(np.float64)
    rmse = float(np.sqrt(mean_squared_error(y_test, pred64)))
    mae = float(mean_absolute_error(y_test, pred64))
    r2 = float(r2_score(y_test, pred64))
    log(f"held-out metrics: RMSE={rmse:.4f} MAE={mae:.4f} R2={r2:.4f}")

    # ---------------------------------------------------------------- export
    model_path = OUT_DIR / "model.onnx"
    common.export_onnx(
        reg,
        X.shape[1],
        model_path,
        MODEL_VERSION,
        ONNX_GRAPH_NAME,
        ONNX_DOC_STRING,
        {VALUE_OUTPUT: onnx.TensorProto.FLOAT},
    )

    # ---------------------------------------------------------- verification
    # onnxruntime sums the 300 tree outputs in float32.  For a single row or
    # a batch of up to 50 rows it adds them one by one in tree order; for
    # larger batches with more than one intra-op thread it adds per-thread
    # partial sums, so the last bits depend on the thread count (differences
    # up to ~1e-4 on values ~300 were seen).  To make reference.json
    # independent of the machine's core count, every session here runs with
    # intra_op_num_threads=1, which always uses the tree-order sum.
    log("verifying ONNX output against xgboost predict with onnxruntime ...")
    sess = common.ort_session(model_path, threads=1)
    out_names = [o.name for o in sess.get_outputs()]
    if out_names != [VALUE_OUTPUT]:
        raise SystemExit(f"ERROR: onnxruntime sees outputs {out_names}")
    # The whole held-out set is scored in one call, so batching is checked too.
    (onnx_value,) = sess.run([VALUE_OUTPUT], {INPUT_NAME: X_test32})
    onnx_value = np.asarray(onnx_value)
    if onnx_value.dtype != np.float32 or onnx_value.shape != (len(y_test), 1):
        raise SystemExit(f"ERROR: {VALUE_OUTPUT} output is {onnx_value.dtype} {onnx_value.shape}")
    onnx_value = onnx_value[:, 0]
    max_diff = float(np.max(np.abs(onnx_value.astype(np.float64) - pred64)))
    if not max_diff < TOLERANCE:
        raise SystemExit(
            f"ERROR: ONNX predictions differ from xgboost predict by {max_diff:.3g} "
            f"(>= {TOLERANCE}) on the held-out set"
        )
    log(f"OK: max |onnx - xgboost| = {max_diff:.3g} over {len(y_test)} held-out rows (tolerance {TOLERANCE:g})")

    # Every row scored alone, and the first 50 rows as one batch, with 1, 2
    # and 4 threads, must give exactly (bit for bit) the values above: this
    # is what lets the Rust side compare with reference.json within 1e-5
    # whether it scores the rows one at a time or in small batches.
    for threads in (1, 2, 4):
        s = sess if threads == 1 else common.ort_session(model_path, threads)
        single = np.array([s.run([VALUE_OUTPUT], {INPUT_NAME: X_test32[i : i + 1]})[0][0, 0] for i in range(len(y_test))])
        (small,) = s.run([VALUE_OUTPUT], {INPUT_NAME: X_test32[:50]})
        if not (np.array_equal(single, onnx_value) and np.array_equal(np.asarray(small)[:, 0], onnx_value[:50])):
            raise SystemExit(
                f"ERROR: with {threads} thread(s), ONNX predictions of single rows or a 50-row batch "
                "differ from the single-threaded batch"
            )
    log("OK: single rows and 50-row batches give bit-identical predictions with 1, 2 and 4 threads")

    # -------------------------------------------------------------- manifest
    features = common.feature_entries(
        feature_names, X_train, VALID_RANGE_FACTOR * col_min, VALID_RANGE_FACTOR * col_max
    )
    card = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "task": "regression",
        "description": (
            "XGBoost gradient-boosted tree regressor predicting a quantitative measure of "
            "diabetes disease progression one year after baseline (25 to 346 in the training "
            "data) from 10 baseline variables: age, sex, body mass index, average blood "
            "pressure and six blood serum measurements (scikit-learn diabetes data, Efron et "
            "al. 2004). The features must be on scikit-learn's scaled form (each column mean "
            "centred and divided by its standard deviation times sqrt(442)), not in raw units. "
            "variable[:, 0] is the predicted progression; risk bands: low < 100 <= moderate "
            "< 200 <= high (about the tertiles of the observed target)."
        ),
        "outputs": {"value": VALUE_OUTPUT},
        "positive_class": "",
        "features": features,
        "valid_range_rule": (
            "the features are scikit-learn's scaled values (each column mean centred and divided "
            "by its standard deviation times sqrt(n_samples)), so every feature has a negative "
            f"smallest and a positive largest value; min is {VALID_RANGE_FACTOR:g} x the smallest "
            f"and max is {VALID_RANGE_FACTOR:g} x the largest value of that feature in the full "
            f"data set (all {X.shape[0]} rows), i.e. the observed range widened {VALID_RANGE_FACTOR:g}-fold "
            "on each side of 0. Inputs outside [min, max] are rejected as invalid. "
            "training_mean, training_std (population, ddof=0), bin_edges (10 quantile bins, "
            "deduplicated, strictly increasing; sex takes only two values, so its midpoint is "
            "added) and bin_shares (each bin's share of the rows) are computed on the training "
            "split only."
        ),
        "risk_bands": RISK_BANDS,
        "metrics": {
            "heldout_rmse": rnd(rmse),
            "heldout_mae": rnd(mae),
            "heldout_r2": rnd(r2),
            "heldout_rows": int(len(y_test)),
            "training_rows": int(len(y_train)),
        },
        "training_data": {
            "source": (
                "scikit-learn load_diabetes (Efron, Hastie, Johnstone, Tibshirani 2004, "
                "\"Least Angle Regression\", Annals of Statistics 32(2); data from "
                "https://www4.stat.ncsu.edu/~boos/var.select/diabetes.html), default scaled features"
            ),
            "rows": int(X.shape[0]),
            "licence": (
                "BSD-3-Clause: the data ships inside scikit-learn, which is distributed under "
                "BSD-3-Clause; the original authors publish no separate licence for it"
            ),
            "split": common.split_text(TEST_SIZE, SEED, stratify=False),
            "synthetic": False,
        },
        "intended_use": (
            "Demonstration and testing of the AigroNova model-serving platform: a small, real, "
            "openly licensed tabular regressor with a reproducible ONNX export, exercising the "
            "regression path (a continuous value and risk bands in target units). It may "
            "illustrate decision support for following up people with diabetes, but it is NOT "
            "a medical device and must not be used to diagnose, screen, predict the course of "
            "disease for, or treat any person."
        ),
        "limitations": (
            f"Trained on only {len(y_train)} rows from a single cohort of 442 diabetes patients "
            "described in a 2004 statistics paper; the target is an unnamed quantitative measure "
            "of disease progression whose clinical meaning is not documented, and the features "
            "are standardized with this cohort's own means and standard deviations, so values "
            "from other populations or laboratories are not comparable. Held-out metrics come "
            f"from {len(y_test)} rows and have wide uncertainty (held-out R^2 {r2:.2f}: most of "
            "the variation is not explained); no external validation, no calibration study and no "
            "fairness analysis were done. Predictions and risk bands are model outputs, not "
            "clinical risk estimates."
        ),
        "training_script": "models/train_diabetes.py",
    }
    common.write_manifest(model_path, X.shape[1], card)

    # ------------------------------------------------------------- reference
    # One held-out row per risk band (the first one, in held-out order, whose
    # ONNX prediction falls in that band), so the reference covers every
    # band.  If a band had no such row, the first unused held-out rows fill
    # up to three.
    chosen = sorted(common.fill_rows(common.first_row_in_each_band(onnx_value, RISK_BANDS), len(y_test)))
    rows = []
    for i in chosen:
        rows.append(
            {
                # The model reads the features as float32 (round to nearest).
                "features": common.feature_values(feature_names, X[idx_test[i]]),
                # onnxruntime's float32 output (tree-order sum, see the
                # verification above), exactly, as a float.
                "value": float(onnx_value[i]),
                "xgboost_value": float(pred_test[i]),
                "target": float(y_test[i]),
                "risk_band": common.band_of(float(onnx_value[i]), RISK_BANDS),
            }
        )
    summary = ", ".join(
        f"row {idx_test[i]}: target={r['target']:g} onnx={r['value']:.6f} xgboost={r['xgboost_value']:.6f} ({r['risk_band']})"
        for i, r in zip(chosen, rows)
    )
    common.write_reference(OUT_DIR, MODEL_NAME, MODEL_VERSION, rows, summary)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
