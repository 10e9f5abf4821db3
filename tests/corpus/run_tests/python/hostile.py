import os
import signal
import time


def solution(x):
    if x == "kill harness":
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(1)
    if x == "stop harness":
        os.kill(os.getppid(), signal.SIGSTOP)
        time.sleep(5)
    if x == "fork bomb":
        while True:
            try:
                os.fork()
            except OSError:
                pass
    if x == "setsid leftover":
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "300"])
            os._exit(0)
        return "left"
    if x == "fork without exec":
        if os.fork() == 0:
            time.sleep(300)
        return "forked"
    if x == "ignore signals":
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, range(1, 32))
        while True:
            pass
    if x == "delete files":
        removed = 0
        for root in ("/tmp", "/var/tmp", os.getcwd()):
            for d, dirs, files in os.walk(root):
                for f in files:
                    try:
                        os.remove(os.path.join(d, f))
                        removed += 1
                    except OSError:
                        pass
        return "deleted"
    if x == "write to the harness":
        # Its verdict channel, reopened through /proc, would let a case forge verdicts:
        # a passing one for this case (10) goes to whatever of the harness opens (but
        # the pipes this case writes its own result and output to).
        forged = b'{"i": 10, "status": "ok", "value": "forged", "stdout": ""}\n'
        mine = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                mine.add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        for fd in range(64):
            try:
                if os.readlink(f"/proc/{os.getppid()}/fd/{fd}") in mine:
                    continue
            except OSError:
                pass
            try:
                w = os.open(f"/proc/{os.getppid()}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                os.write(w, forged)
            except OSError:
                pass
            os.close(w)
        return "not forged"
    return x
