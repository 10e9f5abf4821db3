# berth's Python test harness: run as `python3 -c <this> ` with a JSON spec on stdin:
#   {"code": str | null, "path": str | null, "entrypoint": str | null,
#    "cases": [{"input": any}], "timeout_s": float, "max_stdout": int}
# The candidate's code is compiled once; every case runs in a fresh forked child that
# executes the module and calls the entrypoint, so no case can change what the next sees.
# One JSON line per case goes to the harness's own copy of stdout (user code never runs in
# this process, and each child closes that copy first):
#   {"status": "ok"|"error"|"timeout"|"memory", "value": any, "error": str,
#    "stdout": str, "duration_ms": int}
# Expected values never come here: the supervisor compares.
import inspect, json, math, os, resource, select, signal, sys, time, traceback

MAX_VALUE = 256 * 1024
DRAIN_GRACE = 0.05
OUT = os.dup(1)
spec = json.loads(sys.stdin.read())
devnull = os.open(os.devnull, os.O_RDWR)
os.dup2(devnull, 0)
os.dup2(devnull, 1)
os.dup2(devnull, 2)
os.set_inheritable(OUT, False)


def emit(record):
    os.write(OUT, (json.dumps(record) + "\n").encode())


def oom_kills():
    for path, key in (("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill "),
                      ("/sys/fs/cgroup/memory.events", "oom_kill ")):
        try:
            for line in open(path):
                if line.startswith(key):
                    return int(line.split()[1])
        except OSError:
            pass
    return 0


filename = spec.get("path") or "solution.py"
source = spec.get("code")
if source is None:
    try:
        source = open(filename).read()
    except OSError as e:
        for _ in spec["cases"]:
            emit({"status": "error", "error": f"cannot read {filename}: {e.strerror}", "duration_ms": 0})
        sys.exit(0)
try:
    compiled = compile(source, filename, "exec")
except SyntaxError as e:
    message = f"SyntaxError: {e.msg} (line {e.lineno})"
    for _ in spec["cases"]:
        emit({"status": "error", "error": message, "duration_ms": 0})
    sys.exit(0)


def candidate_line(tb):
    line = None
    for frame in traceback.extract_tb(tb):
        if frame.filename == filename:
            line = frame.lineno
    return line


def to_json(value, depth=0):
    """Documented mapping of Python values to JSON: tuples and sets become lists (sets
    sorted when they can be), NaN and infinities become the strings "NaN", "Infinity",
    "-Infinity", bytes become text, other objects their public attributes or repr."""
    if depth > 100:
        raise ValueError("the value is nested more than 100 levels deep")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, (list, tuple)):
        return [to_json(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_json(v, depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dict):
        return {str(k): to_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if hasattr(value, "__dict__"):
        return {k: to_json(v, depth + 1) for k, v in vars(value).items() if not k.startswith("_")}
    return repr(value)


def resolve(namespace):
    name = spec.get("entrypoint")
    if name and "." in name:
        cls, method = name.split(".", 1)
        return getattr(namespace[cls](), method)
    if name:
        if name not in namespace:
            raise LookupError(f"no function named {name!r} in the code")
        return namespace[name]
    if callable(namespace.get("solution")):
        return namespace["solution"]
    functions = [v for k, v in namespace.items()
                 if inspect.isfunction(v) and v.__module__ == "__candidate__" and not k.startswith("_")]
    if len(functions) == 1:
        return functions[0]
    cls = namespace.get("Solution")
    if inspect.isclass(cls):
        methods = [m for m in vars(cls) if not m.startswith("_") and callable(getattr(cls, m))]
        if len(methods) == 1:
            return getattr(cls(), methods[0])
    raise LookupError("no entrypoint: define `solution`, one top-level function, "
                      "or a class Solution with one public method (or name it in `entrypoint`)")


def call(fn, given):
    if isinstance(given, list):
        return fn(*given)
    if isinstance(given, dict):
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        if given and all(k in params for k in given):
            return fn(**given)
    return fn(given)


def child(case, result_w, out_w):
    os.close(OUT)
    os.setsid()
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = sys.stdout
    sys.setrecursionlimit(10_000)
    try:
        namespace = {"__name__": "__candidate__", "__file__": filename, "__builtins__": __builtins__}
        sys.path.insert(0, os.path.dirname(os.path.abspath(filename)))
        exec(compiled, namespace)
        value = to_json(call(resolve(namespace), case.get("input")))
        record = {"status": "ok", "value": value}
    except BaseException as e:
        line = candidate_line(e.__traceback__)
        where = f" (line {line})" if line else ""
        record = {"status": "error", "error": f"{type(e).__name__}: {e}{where}"[:2000]}
    try:
        sys.stdout.flush()
    except Exception:
        pass
    try:
        data = json.dumps(record, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        data = json.dumps({"status": "error", "error": f"the returned value is not JSON: {e}"}).encode()
    if len(data) > MAX_VALUE:
        data = json.dumps({"status": "error",
                           "error": f"the returned value is larger than {MAX_VALUE} bytes as JSON"}).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(result_w, view[:65536]):]
    os._exit(0)


def kill_case(pid):
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run(case):
    result_r, result_w = os.pipe()
    out_r, out_w = os.pipe()
    oom_before = oom_kills()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(result_r)
        os.close(out_r)
        child(case, result_w, out_w)
    os.close(result_w)
    os.close(out_w)
    deadline = started + spec["timeout_s"]
    result, output, kept = bytearray(), bytearray(), spec["max_stdout"]
    open_fds, timed_out, drained = {result_r, out_r}, False, False
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = not drained
            break
        ready, _, _ = select.select(list(open_fds), [], [], left)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                if fd == result_r:
                    # The case is over; leftovers may hold its stdout open forever.
                    deadline = min(deadline, time.monotonic() + DRAIN_GRACE)
                    drained = True
            elif fd == result_r:
                result += chunk
            elif len(output) < kept:
                output += chunk[: kept - len(output)]
    if timed_out:
        kill_case(pid)
    _, status = os.waitpid(pid, 0)
    # Whatever the case left running in its process group goes with it.
    kill_case(pid)
    for fd in (result_r, out_r):
        os.close(fd)
    duration = int((time.monotonic() - started) * 1000)
    record = {"stdout": output.decode("utf-8", "replace"), "duration_ms": duration}
    if timed_out:
        record.update(status="timeout", error=f"the case ran past its {spec['timeout_s']}s")
    elif result:
        try:
            record.update(json.loads(result))
        except ValueError:
            record.update(status="error", error="the case's result was garbled")
    elif oom_kills() > oom_before:
        record.update(status="memory", error="killed for exceeding the sandbox's memory limit")
    elif os.WIFSIGNALED(status):
        record.update(status="error", error=f"the case was killed by signal {os.WTERMSIG(status)}")
    else:
        record.update(status="error",
                      error=f"the case exited with code {os.WEXITSTATUS(status)} without returning")
    return record


for case in spec["cases"]:
    emit(run(case))
