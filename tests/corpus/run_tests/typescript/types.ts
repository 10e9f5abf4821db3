function solution(n: number): string {
  return n;
}
