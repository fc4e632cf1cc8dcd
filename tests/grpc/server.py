"""The gRPC upstreams of tests/grpc.rs: subsets v1 and v2 as two real gRPC
servers (PyPI grpcio, HTTP/2 cleartext) in one process, one port each.

    server.py --v1-port P1 --v2-port P2 [--v2-fail-every N] [--v2-fail-code NAME]

No generated code: one service `canarytest.Echo`, served by generic handlers
with bytes in and bytes out:

  /canarytest.Echo/Call    unary: answers the request bytes
  /canarytest.Echo/Stream  server streaming: answers `x-want-messages` copies
                           (default 2) of the request bytes

Every answer says who answered and what routing header it received, in its
trailing metadata always (`x-served-by: v1|v2`, `x-seen-subset`) and in its
initial metadata when it sends any.

What a call ends with is, unless the call asks otherwise, OK; on v2 with
`--v2-fail-every N`, every Nth such call of v2 (counted per process, over the
calls that ask for nothing) ends with `--v2-fail-code` (default UNAVAILABLE)
as a trailers-only response. A call may ask, in its metadata:

  x-want-status: NAME      end with this status code (e.g. NOT_FOUND)
  x-want-mode: MODE        how a non-OK status is sent:
      trailers-only        before any metadata or message: one HEADERS frame
                           with END_STREAM carrying grpc-status (gRPC's
                           "Trailers-Only" response); the default
      after-metadata       initial metadata first, then the status in trailers
      after-message        (Stream only) initial metadata and the messages
                           first, then the status in trailers
  x-want-delay-ms: MS      wait this long before answering anything
  x-want-tail-delay-ms: MS send initial metadata (and, for Stream, the
                           messages) at once, then wait this long before the
                           trailers

Prints `ready <v1-port> <v2-port>` on stdout once both servers listen, then
serves until killed (or until its stdin closes, so it never outlives the test).
"""

import argparse
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "canarytest.Echo"


def code_of(name):
    try:
        return grpc.StatusCode[name]
    except KeyError:
        raise SystemExit(f"unknown gRPC status {name!r}")


class Subset:
    def __init__(self, name, fail_every, fail_code):
        self.name = name
        self.fail_every = fail_every
        self.fail_code = fail_code
        self.plain_calls = 0
        self.lock = threading.Lock()

    def plan(self, context):
        """(status code, mode, delay s, tail delay s, messages, who-metadata)."""
        md = {}
        for key, value in context.invocation_metadata():
            md.setdefault(key, value)
        who = (("x-served-by", self.name), ("x-seen-subset", md.get("x-canary-subset", "")))
        code = grpc.StatusCode.OK
        if "x-want-status" in md:
            code = code_of(md["x-want-status"])
        elif self.fail_every:
            with self.lock:
                self.plain_calls += 1
                if self.plain_calls % self.fail_every == 0:
                    code = self.fail_code
        mode = md.get("x-want-mode", "trailers-only")
        delay = int(md.get("x-want-delay-ms", "0")) / 1000
        tail = int(md.get("x-want-tail-delay-ms", "0")) / 1000
        messages = int(md.get("x-want-messages", "2"))
        return code, mode, delay, tail, messages, who

    def end(self, context, code, who):
        context.set_trailing_metadata(who)
        if code != grpc.StatusCode.OK:
            context.abort(code, f"{self.name} says {code.name}")

    def call(self, request, context):
        code, mode, delay, tail, _, who = self.plan(context)
        time.sleep(delay)
        if code != grpc.StatusCode.OK and mode == "trailers-only":
            self.end(context, code, who)
        context.send_initial_metadata(who)
        time.sleep(tail)
        self.end(context, code, who)
        return request

    def stream(self, request, context):
        code, mode, delay, tail, messages, who = self.plan(context)
        time.sleep(delay)
        if code != grpc.StatusCode.OK and mode == "trailers-only":
            self.end(context, code, who)
        context.send_initial_metadata(who)
        if code == grpc.StatusCode.OK or mode == "after-message":
            for _ in range(messages):
                yield request
        time.sleep(tail)
        self.end(context, code, who)

    def handler(self):
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Call": grpc.unary_unary_rpc_method_handler(self.call),
                "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            },
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--v1-port", type=int, required=True)
    ap.add_argument("--v2-port", type=int, required=True)
    ap.add_argument("--v2-fail-every", type=int, default=0)
    ap.add_argument("--v2-fail-code", default="UNAVAILABLE")
    args = ap.parse_args()
    servers = []
    for name, port, every in (
        ("v1", args.v1_port, 0),
        ("v2", args.v2_port, args.v2_fail_every),
    ):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        server.add_generic_rpc_handlers((Subset(name, every, code_of(args.v2_fail_code)).handler(),))
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        if bound != port:
            raise SystemExit(f"could not listen on 127.0.0.1:{port}")
        server.start()
        servers.append(server)
    print(f"ready {args.v1_port} {args.v2_port}", flush=True)
    # The test holds our stdin: when it goes away (killed, or finished), so do we.
    sys.stdin.read()
    for server in servers:
        server.stop(grace=None)


if __name__ == "__main__":
    main()
