import math


class Point:
    def __init__(self, x, y):
        self.x, self.y, self._hidden = x, y, "no"


def solution(kind):
    if kind == "float":
        return 0.1 + 0.2
    if kind == "float-off":
        return 0.3001
    if kind == "nested":
        return {"a": [1, (2, 3)], "b": {4}, "c": {"d": None}}
    if kind == "unicode":
        return "héllo ✓ 日本 🎉"
    if kind == "big":
        return 2 ** 80
    if kind == "nan":
        return [math.nan, math.inf, -math.inf]
    if kind == "object":
        return Point(1, 2)
    if kind == "bytes":
        return b"ok"
    return kind
