"""Python function worker of the controller (started as `python3 -I -u -c <this file> <limits>`).

Applies its limits first (the JSON object in argv[1]: address space, CPU seconds, open files,
file size, no core dumps; see functions.md), then says {"ready": true, "limits": {...}} (the
controller starts each call's clock only then, so the interpreter's own start-up never
counts against a function), then reads one JSON request per line on stdin:
  {"id": N, "op": "check", "code": "..."}                       compile only
  {"id": N, "op": "load", "digest": "...", "code": "..."}       compile and keep `run`
  {"id": N, "op": "call", "digest": "...", "deps": {"alias": "digest"}, "args": [...]}
  {"op": "batch", "reqs": [request, ...]}                      several at once
and answers each request on a line of its own, in order, as soon as it is done:
{"id": N, "ok": true, "value": ...} or {"id": N, "error": "..."}. The controller therefore
knows which request a worker is busy with (the first one not answered yet).
After a MemoryError the answer carries "fatal": true and the worker exits (its heap may be
left unusable); past its CPU budget it answers the request in hand, says {"retire": true}
and exits. A function's print() goes to stderr, never into the protocol.
"""
import json
import os
import resource
import signal
import sys
import threading
import time
import types

proto_out = sys.stdout
sys.stdout = sys.stderr
funcs = {}
retire = []
# Most levels of nesting of a function's result: the controller's limit for all data in a
# graph (sent with the limits).
max_depth = 64


def apply_limits(spec):
    """Lowers this process's soft and hard limits; returns what is in force."""
    global max_depth
    max_depth = spec.get("max_depth", max_depth)
    mib = 1024 * 1024
    wanted = {
        resource.RLIMIT_AS: spec.get("memory_mb", 0) * mib,
        resource.RLIMIT_FSIZE: spec.get("file_mb", 0) * mib,
        resource.RLIMIT_NOFILE: spec.get("open_files", 0),
        resource.RLIMIT_CORE: 0,
    }
    for res, value in wanted.items():
        if value or res == resource.RLIMIT_CORE:
            resource.setrlimit(res, (value, value))
    if spec.get("nice", 0):
        os.nice(spec["nice"])
    cpu = spec.get("cpu_seconds", 0)
    if cpu:
        # Soft limit: SIGXCPU, after which the worker finishes its request and retires; the
        # hard limit (SIGKILL) only if it cannot.
        signal.signal(signal.SIGXCPU, lambda *_: retire.append(True))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 10))
    names = {"memory_mb": resource.RLIMIT_AS, "file_mb": resource.RLIMIT_FSIZE}
    shown = {k: resource.getrlimit(r)[1] // mib for k, r in names.items()}
    shown["open_files"] = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    shown["cpu_seconds"] = resource.getrlimit(resource.RLIMIT_CPU)[0]
    shown["core"] = resource.getrlimit(resource.RLIMIT_CORE)[1]
    shown["nice"] = os.nice(0)
    return shown


def compile_run(code, name):
    g = {"__name__": name, "__builtins__": __builtins__}
    exec(compile(code, name, "exec"), g)
    run = g.get("run")
    if not callable(run):
        raise ValueError("the code defines no run() function")
    return run, g


def too_deep(value):
    """Whether `value` nests lists and dicts deeper than `max_depth` (iteratively: no
    recursion limit to hit)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, tuple)):
            items = v
        elif isinstance(v, dict):
            items = v.values()
        else:
            continue
        if d > max_depth:
            return True
        stack.extend((x, d + 1) for x in items)
    return False


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
        value = run(*req["args"])
        if too_deep(value):
            raise DepthError("data nested deeper than %d levels" % max_depth)
        return value
    raise ValueError("unknown op %r" % op)


class DepthError(ValueError):
    pass


def answer(req):
    rid = None
    try:
        rid = req.get("id")
        return {"id": rid, "ok": True, "value": handle(req)}
    except DepthError as e:
        return {"id": rid, "error": str(e), "plain": True}
    except MemoryError as e:
        return {"id": rid, "error": "MemoryError: %s" % (e or "out of memory"), "fatal": True}
    except (Exception, SystemExit) as e:  # noqa: BLE001 - every failure of user code is reported
        return {"id": rid, "error": "%s: %s" % (type(e).__name__, e)}


def dumps(reply):
    """The reply as a line, or an error if its value is not JSON (an object, NaN)."""
    try:
        return json.dumps(reply, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        return json.dumps({"id": reply.get("id"), "error": "wrong return type: %s" % e})


def exit_with_parent(getppid=os.getppid, sleep=time.sleep, exit_now=os._exit):
    """Ends this process once the controller is gone, even while a function loops forever:
    a controller that is killed (SIGKILL, OOM) cannot stop its workers itself. (The functions
    it uses are bound before any user code runs.)"""
    parent = getppid()
    while getppid() == parent:
        sleep(1)
    exit_now(1)


def serve(req):
    reply = answer(req if isinstance(req, dict) else {})
    proto_out.write(dumps(reply) + "\n")
    proto_out.flush()
    if reply.get("fatal"):
        os._exit(3)
    if retire:
        proto_out.write('{"retire": true}\n')
        proto_out.flush()
        os._exit(0)


def main():
    limits = apply_limits(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
    threading.Thread(target=exit_with_parent, daemon=True).start()
    proto_out.write(json.dumps({"ready": True, "limits": limits}) + "\n")
    proto_out.flush()
    for line in sys.stdin.buffer:
        try:
            req = json.loads(line)
        except ValueError as e:
            req = {"op": "bad", "error": str(e)}
        if isinstance(req, dict) and req.get("op") == "batch":
            for r in req.get("reqs", []):
                serve(r)
        else:
            serve(req)


main()
