# berth's Python test harness, run as `python3 -c <this>` with a JSON spec on stdin:
#   {"code": str | null, "path": str | null, "entrypoint": str | null,
#    "cases": [{"i": int, "input": any}], "timeout_s": float, "max_stdout": int,
#    "max_value": int, "modules": {filename: {"code": str}} | null}
# The candidate's code is compiled once; every case runs in a fresh forked child that
# executes the module and calls the entrypoint, so no case can change what the next sees.
# Lines go to the harness's own copy of stdout (user code never runs in this process,
# each child closes that copy first, and this process is not dumpable, so a child cannot
# reach it through /proc; gVisor 20221219 opens a non-dumpable process's /proc/<pid>/fd
# all the same, but that copy is the agent's pipe, which only root may open):
#   {"ready": true, "modules": {...}}  the code compiled; cases follow (the supervisor passes
#                                      `modules` back if it must start this harness again)
#   {"compile_error": str}             it did not; nothing follows
#   {"i": int, "status": "ok"|"error"|"timeout"|"memory", "value": any, "error": str,
#    "stdout": str, "duration_ms": int}          one per case, in order
# Expected values never come here: the supervisor compares. If a case kills this process,
# the supervisor starts it again from the next case.
# Few imports, and light ones: the harness starts for every run (inspect alone would add
# a quarter to its start-up; it is imported only for callables that are not plain code).
import json, math, os, resource, select, signal, sys, time, types

TAG_GID_BASE = 2_100_000_000
OUT = os.dup(1)
spec = json.loads(sys.stdin.read())
# Bytes of a case's value as sent (JSON, ASCII); the supervisor sets it.
MAX_VALUE = max(1024, int(spec.get("max_value") or 256 * 1024))
devnull = os.open(os.devnull, os.O_RDWR)
os.dup2(devnull, 0)
os.dup2(devnull, 1)
os.dup2(devnull, 2)
os.set_inheritable(OUT, False)


def not_dumpable():
    """PR_SET_DUMPABLE 0: a case (same uid) cannot open /proc/<harness>/fd or its memory."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except Exception:
        pass


not_dumpable()


def emit(record):
    data = (json.dumps(record) + "\n").encode()
    view = memoryview(data)
    while view:
        view = view[os.write(OUT, view):]


def oom_kills():
    # The cgroup's count, or (gVisor: no cgroup files) the agent's memory guard's.
    for path, key in (("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill "),
                      ("/sys/fs/cgroup/memory.events", "oom_kill "),
                      ("/run/berth-guard/oom_kills", "oom_kill ")):
        try:
            for line in open(path):
                if line.startswith(key):
                    return int(line.split()[1])
        except OSError:
            pass
    return 0


def groups_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return line.split()[1:]
    except OSError:
        pass
    return []


# The exec's tag group (given by berth's agent to every process of this exec, and
# impossible to shed): whatever carries it, other than this process, is a case's leftover.
TAG = next((g for g in groups_of("self") if int(g) >= TAG_GID_BASE), None)
ME = os.getpid()


def kill_leftovers():
    if TAG is None:
        return
    for _ in range(100):
        found = False
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == ME:
                continue
            if TAG in groups_of(name):
                found = True
                try:
                    os.kill(int(name), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return


def kill_group(pgid):
    """SIGKILL the case's process group until it is empty (a fork bomb keeps forking)."""
    for _ in range(1000):
        try:
            os.kill(-pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except PermissionError:
            return


filename = spec.get("path") or "solution.py"
source = spec.get("code")
if spec.get("modules"):
    source = spec["modules"][filename]["code"]
if source is None:
    try:
        source = open(filename).read()
    except OSError as e:
        emit({"compile_error": f"cannot read {filename}: {e.strerror}"})
        sys.exit(0)
try:
    compiled = compile(source, filename, "exec")
except SyntaxError as e:
    emit({"compile_error": f"{type(e).__name__}: {e.msg} (line {e.lineno})"})
    sys.exit(0)
except (ValueError, TypeError) as e:
    emit({"compile_error": f"{type(e).__name__}: {e}"})
    sys.exit(0)
emit({"ready": True, "modules": {filename: {"code": source}}})


def candidate_line(tb):
    """The innermost line of the traceback that is in the candidate's file."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
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
        if not isinstance(namespace.get(cls), type):
            raise LookupError(f"no class named {cls!r} in the code")
        return getattr(namespace[cls](), method)
    if name:
        if name not in namespace:
            raise LookupError(f"no function named {name!r} in the code")
        return namespace[name]
    if callable(namespace.get("solution")):
        return namespace["solution"]
    functions = [v for k, v in namespace.items()
                 if isinstance(v, types.FunctionType) and v.__module__ == "__candidate__"
                 and not k.startswith("_")]
    if len(functions) == 1:
        return functions[0]
    cls = namespace.get("Solution")
    if isinstance(cls, type):
        methods = [m for m in vars(cls) if not m.startswith("_") and callable(getattr(cls, m))]
        if len(methods) == 1:
            return getattr(cls(), methods[0])
    raise LookupError("no entrypoint: define `solution`, one top-level function, "
                      "or a class Solution with one public method (or name it in `entrypoint`)")


def parameter_names(fn):
    """The names `fn` takes by keyword (`self` of a bound method left out)."""
    target = fn.__func__ if isinstance(fn, types.MethodType) else fn
    code = getattr(target, "__code__", None)
    if code is None:
        import inspect
        try:
            return set(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            return set()
    names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    return set(names[1:] if target is not fn else names)


def call(fn, given):
    if isinstance(given, list):
        return fn(*given)
    if isinstance(given, dict):
        params = parameter_names(fn)
        if given and all(k in params for k in given):
            return fn(**given)
    return fn(given)


def own_processes():
    uid, count = str(os.getuid()), 0
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/status") as status:
                count += any(l.startswith("Uid:") and l.split()[1] == uid for l in status)
        except (OSError, ValueError):
            pass
    return count


def child(case, result_w, out_w):
    # What this case must not see: the other cases' inputs, hidden ones included.
    spec["cases"] = []
    spec["modules"] = None
    os.close(OUT)
    os.setsid()
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.close(out_w)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = sys.stdout
    sys.setrecursionlimit(10_000)
    if spec.get("memory_bytes"):
        # gVisor: the agent's guard samples memory, and one big allocation can outrun it;
        # bounded address space, the allocation fails here instead (a MemoryError).
        limit = spec["memory_bytes"]
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if spec.get("case_processes"):
        # There too, many small processes (a fork bomb) fill memory while they starve the
        # guard: the case may add this many to what its user runs already.
        limit = own_processes() + spec["case_processes"]
        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, hard))
    try:
        namespace = {"__name__": "__candidate__", "__file__": filename, "__builtins__": __builtins__}
        sys.path.insert(0, os.path.dirname(os.path.abspath(filename)))
        exec(compiled, namespace)
        value = to_json(call(resolve(namespace), case.get("input")))
        record = {"status": "ok", "value": value}
    except MemoryError as e:
        line = candidate_line(e.__traceback__)
        where = f" (line {line})" if line else ""
        record = {"status": "memory", "error": f"MemoryError: an allocation went past the sandbox's memory limit{where}"}
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
    try:
        while view:
            view = view[os.write(result_w, view[:65536]):]
    except OSError:
        pass
    os._exit(0)


# A case's exit wakes the loop below through this pipe.
wake_r, wake_w = os.pipe()
os.set_blocking(wake_r, False)
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda *_: None)


def drain(fd, into, room):
    """Reads what is there without blocking; False at end of file."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        if room is None or len(into) < room:
            into += chunk if room is None else chunk[: room - len(into)]


def fork():
    """os.fork, waiting out EAGAIN: a case that filled the pids limit (a fork bomb) is
    killed, but its dead count until PID 1 reaps them; the next case waits for room
    rather than ending the harness (bounded: past it, the error ends the harness)."""
    pause, waited = 0.01, 0.0
    while True:
        try:
            return os.fork()
        except BlockingIOError:
            if waited >= 5:
                raise
            time.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.2)


def run(case):
    kill_leftovers()
    result_r, result_w = os.pipe()
    out_r, out_w = os.pipe()
    for fd in (result_r, out_r):
        os.set_blocking(fd, False)
    oom_before = oom_kills()
    started = time.monotonic()
    pid = fork()
    if pid == 0:
        os.close(result_r)
        os.close(out_r)
        os.close(wake_r)
        os.close(wake_w)
        child(case, result_w, out_w)
    os.close(result_w)
    os.close(out_w)
    deadline = started + spec["timeout_s"]
    result, output, kept = bytearray(), bytearray(), spec["max_stdout"]
    status, timed_out = None, False
    while status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        select.select([result_r, out_r, wake_r], [], [], left)
        try:
            while os.read(wake_r, 512):
                pass
        except BlockingIOError:
            pass
        drain(result_r, result, MAX_VALUE + 4096)
        drain(out_r, output, kept)
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
    # The case is over: it, and whatever it left running, go.
    kill_group(pid)
    if status is None:
        _, status = os.waitpid(pid, 0)
    kill_leftovers()
    drain(result_r, result, MAX_VALUE + 4096)
    drain(out_r, output, kept)
    for fd in (result_r, out_r):
        os.close(fd)
    duration = int((time.monotonic() - started) * 1000)
    record = {"i": case["i"], "stdout": output.decode("utf-8", "replace"), "duration_ms": duration}
    if timed_out:
        record.update(status="timeout", error=f"the case ran past its {spec['timeout_s']:g}s")
    elif result:
        try:
            reported = json.loads(result)
            record.update(status=reported.get("status", "error"), value=reported.get("value"),
                          error=reported.get("error"))
        except (ValueError, AttributeError):
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
