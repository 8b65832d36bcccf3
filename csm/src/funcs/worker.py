"""Python function worker of the controller (started as `python3 -c <this file>`).

Says {"ready": true} once started (the controller starts each call's deadline only then, so
the interpreter's own start-up never counts against a function), then reads one JSON request
per line on stdin and answers one JSON line per request on stdout (it exits by itself within a
second of the controller's death):
  {"id": N, "op": "check", "code": "..."}                       compile only
  {"id": N, "op": "load", "digest": "...", "code": "..."}       compile and keep `run`
  {"id": N, "op": "call", "digest": "...", "deps": {"alias": "digest"}, "args": [...]}
  {"op": "batch", "reqs": [request, ...]}                      several at once
Answers: {"id": N, "ok": true, "value": ...} or {"id": N, "error": "..."}; a batch is
answered by one line {"batch": [answer, ...]}.
A function's print() goes to stderr, never into the protocol.
"""
import json
import os
import sys
import threading
import time
import types

proto_out = sys.stdout
sys.stdout = sys.stderr
funcs = {}


def compile_run(code, name):
    g = {"__name__": name, "__builtins__": __builtins__}
    exec(compile(code, name, "exec"), g)
    run = g.get("run")
    if not callable(run):
        raise ValueError("the code defines no run() function")
    return run, g


def handle(req):
    op = req.get("op")
    if op == "check":
        compile_run(req["code"], "<check>")
        return None
    if op == "load":
        funcs[req["digest"]] = compile_run(req["code"], "<func %s>" % req["digest"][:12])
        return None
    if op == "call":
        run, g = funcs[req["digest"]]
        deps = req.get("deps")
        if deps:
            g["iot"] = types.SimpleNamespace(**{a: funcs[d][0] for a, d in deps.items()})
        return run(*req["args"])
    raise ValueError("unknown op %r" % op)


def answer(req):
    rid = None
    try:
        rid = req.get("id")
        return {"id": rid, "ok": True, "value": handle(req)}
    except (Exception, SystemExit) as e:  # noqa: BLE001 - every failure of user code is reported
        return {"id": rid, "error": "%s: %s" % (type(e).__name__, e)}


def checked(reply):
    """The reply, or an error if its value is not JSON (an object, NaN)."""
    try:
        json.dumps(reply, allow_nan=False)
        return reply
    except (TypeError, ValueError) as e:
        return {"id": reply.get("id"), "error": "wrong return type: %s" % e}


def dumps(out, replies):
    # Serialize once; only when that fails, find the culprits one by one.
    try:
        return json.dumps(out, allow_nan=False)
    except (TypeError, ValueError):
        replies[:] = [checked(r) for r in replies]
        return json.dumps(out, allow_nan=False)


def exit_with_parent(getppid=os.getppid, sleep=time.sleep, exit_now=os._exit):
    """Ends this process once the controller is gone, even while a function loops forever:
    a controller that is killed (SIGKILL, OOM) cannot stop its workers itself. (The functions
    it uses are bound before any user code runs.)"""
    parent = getppid()
    while getppid() == parent:
        sleep(1)
    exit_now(1)


def main():
    threading.Thread(target=exit_with_parent, daemon=True).start()
    proto_out.write('{"ready": true}\n')
    proto_out.flush()
    for line in sys.stdin.buffer:
        try:
            req = json.loads(line)
        except ValueError as e:
            req = {"op": "bad", "error": str(e)}
        if isinstance(req, dict) and req.get("op") == "batch":
            replies = [answer(r) for r in req.get("reqs", [])]
            out = {"batch": replies}
        else:
            replies = [answer(req if isinstance(req, dict) else {})]
            out = replies[0]
            if "value" in out:
                out = checked(out)
        proto_out.write(dumps(out, replies) + "\n")
        proto_out.flush()


main()
