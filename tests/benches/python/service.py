"""What a team would otherwise deploy to score one of the platform's classifiers: a FastAPI service
with onnxruntime, reading the same model.onnx and manifest as the platform. The healthquantum
benchmark (tests/benches/health.rs) starts it with uvicorn on the breast-cancer model, the
finquantum benchmark (tests/benches/fin.rs) on the credit-risk model, and each calls it side by
side with the platform. BENCH_MODEL names the model (default breast-cancer), version 1.

    BENCH_MODELS_DIR=<models dir> [BENCH_MODEL=<model>] python service.py <port> <workers>
"""

import json
import os
import socket
import sys

import numpy as np
import onnxruntime
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from uvicorn.protocols.http.h11_impl import H11Protocol

# With several workers, uvicorn's workers accept on a socket it makes without naming its protocol,
# so asyncio leaves Nagle's algorithm on for their connections: an answer's body, written after its
# head, then waits for the client's delayed ACK (about 40 ms) on a connection that is kept for the
# next request. Turned off here for every connection, as a team deploying this would once it saw
# those 40 ms (the benchmarks run one worker a process, each process on a port of its own).
_connection_made = H11Protocol.connection_made


def _connection_made_without_delay(self, transport):
    connection = transport.get_extra_info("socket")
    if connection is not None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _connection_made(self, transport)


H11Protocol.connection_made = _connection_made_without_delay

MODEL = os.environ.get("BENCH_MODEL", "breast-cancer")
MODEL_DIR = os.path.join(os.environ.get("BENCH_MODELS_DIR", "models"), MODEL, "1")

with open(os.path.join(MODEL_DIR, "manifest.json"), encoding="utf-8") as handle:
    MANIFEST = json.load(handle)
FEATURES = [feature["name"] for feature in MANIFEST["features"]]
OPTIONS = onnxruntime.SessionOptions()
OPTIONS.intra_op_num_threads = 1
SESSION = onnxruntime.InferenceSession(os.path.join(MODEL_DIR, "model.onnx"), OPTIONS)

app = FastAPI()


class ScoreRequest(BaseModel):
    model: str
    features: dict[str, float]


@app.post("/score")
def score(request: ScoreRequest):
    try:
        row = np.array([[request.features[name] for name in FEATURES]], dtype=np.float32)
    except KeyError as missing:
        raise HTTPException(status_code=400, detail=f"missing feature {missing}") from None
    probabilities = SESSION.run([MANIFEST["outputs"]["probabilities"]], {MANIFEST["input"]["name"]: row})[0]
    probability = float(probabilities[0][1])
    band = next(b["name"] for b in MANIFEST["risk_bands"] if probability < b["upper"] or b is MANIFEST["risk_bands"][-1])
    return {"model": MANIFEST["name"], "modelVersion": MANIFEST["version"], "probability": probability, "riskBand": band}


if __name__ == "__main__":
    uvicorn.run("service:app", host="127.0.0.1", port=int(sys.argv[1]), workers=int(sys.argv[2]), log_level="warning")
