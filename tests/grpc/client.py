"""The gRPC client of tests/grpc.rs (PyPI grpcio, HTTP/2 cleartext): calls
`canarytest.Echo` (tests/grpc/server.py) through Envoy, on request.

    client.py --target 127.0.0.1:PORT [--channels N]

Reads one JSON object per line on stdin and answers one JSON line per call on
stdout, in order:

  {"method": "Call" | "Stream", "metadata": [["x-user-id", "alice"], ...],
   "payload": "ping", "timeout": 20, "cancel_after": null}
  -> {"code": "OK" | "UNAVAILABLE" | ..., "details": "...",
      "initial": {name: value}, "trailing": {name: value}, "messages": n}

`cancel_after` (seconds) cancels the call from the client, well inside its
deadline, so that no side's deadline can answer first with DEADLINE_EXCEEDED.
`initial` is the metadata of the response's first HEADERS frame (empty for a
trailers-only response), `trailing` that of its trailers. Calls take turns
over `--channels` channels (HTTP/2 connections), opened at start. The client
exits when its stdin closes.
"""

import argparse
import json
import sys
import threading

import grpc

SERVICE = "/canarytest.Echo/"


def metadata_dict(md):
    out = {}
    for key, value in md or ():
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        out.setdefault(key, value)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--channels", type=int, default=1)
    args = ap.parse_args()
    channels = [grpc.insecure_channel(args.target) for _ in range(args.channels)]
    for ch in channels:
        grpc.channel_ready_future(ch).result(timeout=30)
    turn = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        ch = channels[turn % len(channels)]
        turn += 1
        method = req.get("method", "Call")
        md = [(k, v) for k, v in req.get("metadata", [])]
        timeout = req.get("timeout", 20)
        cancel_after = req.get("cancel_after")
        payload = req.get("payload", "ping").encode()
        out = {"messages": 0}
        if method == "Call":
            stub = ch.unary_unary(SERVICE + "Call")
            call = stub.future(payload, metadata=md, timeout=timeout)
            if cancel_after is not None:
                threading.Timer(cancel_after, call.cancel).start()
            try:
                call.result()
                out["messages"] = 1
            except (grpc.RpcError, grpc.FutureCancelledError):
                pass
        elif method == "Stream":
            call = ch.unary_stream(SERVICE + "Stream")(payload, metadata=md, timeout=timeout)
            if cancel_after is not None:
                threading.Timer(cancel_after, call.cancel).start()
            try:
                for _ in call:
                    out["messages"] += 1
            except grpc.RpcError:
                pass
        else:
            raise SystemExit(f"unknown method {method!r}")
        out["code"] = call.code().name
        out["details"] = call.details() or ""
        out["initial"] = metadata_dict(call.initial_metadata())
        out["trailing"] = metadata_dict(call.trailing_metadata())
        print(json.dumps(out), flush=True)
    for ch in channels:
        ch.close()


if __name__ == "__main__":
    main()
