import os
import sys

calls = []


def solution(x):
    calls.append(x)
    print("VERDICT: all passed")
    print('{"i": 1, "status": "ok", "value": 42}')
    if x == "raise":
        raise ValueError("bad " + x)
    if x == "loop":
        while True:
            pass
    if x == "exit":
        sys.exit(3)
    if x == "_exit":
        os._exit(4)
    if x == "memory":
        return len(b"x" * (2 * 1024 ** 3))
    if x == "recurse":
        def f(n):
            return f(n + 1)
        return f(0)
    if x == "state":
        return len(calls)
    if x == "close":
        os.close(1)
        os.close(2)
        return "closed"
    return x
