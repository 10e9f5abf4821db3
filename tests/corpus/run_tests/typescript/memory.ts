export function solution(mb: number): number {
  const hog: number[][] = [];
  for (let k = 0; k < mb; k++) hog.push(new Array(1 << 17).fill(k));
  return hog.length;
}
