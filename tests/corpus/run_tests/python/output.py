import os
import sys


def solution(n):
    chunk = "y" * (1 << 20)
    for _ in range(n):
        sys.stdout.write(chunk)
    return n
