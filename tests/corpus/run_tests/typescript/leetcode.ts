class Solution {
  maxProfit(prices: number[]): number {
    let best = 0;
    let low = Infinity;
    for (const p of prices) {
      low = Math.min(low, p);
      best = Math.max(best, p - low);
    }
    return best;
  }
}
