const calls = [];

function solution(x) {
  calls.push(x);
  console.log('VERDICT: all passed');
  console.log('{"i": 1, "status": "ok", "value": 42}');
  if (x === 'raise') throw new TypeError('bad ' + x);
  if (x === 'loop') while (true) {}
  if (x === 'exit') process.exit(3);
  if (x === 'memory') {
    const hog = [];
    while (true) hog.push(new Array(1 << 20).fill(7));
  }
  if (x === 'recurse') {
    const f = (n) => f(n + 1);
    return f(0);
  }
  if (x === 'state') {
    Array.prototype.includes = () => true;
    globalThis.poisoned = true;
    return calls.length;
  }
  if (x === 'after state') return [calls.length, [1].includes(2), typeof poisoned];
  if (x === 'async loop') return (async () => { for (;;) await null; })();
  if (x === 'never settles') return new Promise(() => {});
  return x;
}
