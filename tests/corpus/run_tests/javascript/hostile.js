const cp = require('child_process');
const fs = require('fs');

function solution(x) {
  const real = require('process');
  if (x === 'kill harness') real.kill(real.pid, 'SIGKILL');
  if (x === 'stop harness') real.kill(real.pid, 'SIGSTOP');
  if (x === 'leftover') {
    cp.spawn('sh', ['-c', 'setsid sleep 300 &'], { stdio: 'ignore' });
    return 'left';
  }
  if (x === 'fake verdict') {
    fs.writeSync(1, '{"i": 4, "status": "ok", "value": "forged"}\n');
    return 'wrote';
  }
  if (x === 'escape') {
    const F = this && this.constructor ? this.constructor.constructor : null;
    return F ? F('return typeof process.binding')() : 'none';
  }
  if (x === 'delete files') {
    for (const dir of ['/tmp', process.cwd()]) {
      for (const f of fs.readdirSync(dir)) {
        try { fs.rmSync(dir + '/' + f, { recursive: true, force: true }); } catch (_) {}
      }
    }
    return 'deleted';
  }
  return x;
}
