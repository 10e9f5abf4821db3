class Point {
  constructor(x, y) {
    this.x = x;
    this.y = y;
    this._hidden = 'no';
  }
}

const solution = (kind) => {
  switch (kind) {
    case 'float': return 0.1 + 0.2;
    case 'float-off': return 0.3001;
    case 'nested': return { a: [1, [2, 3]], b: new Set([4]), c: { d: null, e: undefined } };
    case 'unicode': return 'héllo ✓ 日本 🎉';
    case 'big': return 2n ** 80n;
    case 'nan': return [NaN, Infinity, -Infinity];
    case 'object': return new Point(1, 2);
    case 'map': return new Map([['k', [1, 2]]]);
    case 'undefined': return undefined;
    case 'date': return new Date(0);
    case 'async': return new Promise((resolve) => setTimeout(() => resolve('later'), 20));
    default: return kind;
  }
};
