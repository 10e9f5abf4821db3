function solution(n) {
  const chunk = 'y'.repeat(1 << 20);
  for (let k = 0; k < n; k++) process.stdout.write(chunk);
  console.log('never kept');
  return n;
}
