export function indexOf(seen: Map<number, number>, n: number): number | undefined {
  return seen.get(n);
}
