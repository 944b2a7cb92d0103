// Cross-checks the metrics against independent numpy computations (skipped without numpy).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { writeNpy } from '../src/io/npy.js';
import { featureStats, frechetDistance } from '../src/eval/fid.js';
import { mmd2Unbiased } from '../src/eval/kid.js';
import { precisionRecall } from '../src/eval/prdc.js';
import { seededNormal } from '../src/eval/rng.js';

function numpyPython(): string | null {
  for (const py of ['python3', '/usr/bin/python3']) {
    if (spawnSync(py, ['-c', 'import numpy'], { encoding: 'utf8' }).status === 0) return py;
  }
  return null;
}
const PY = numpyPython();

test('FID, unbiased MMD² and precision/recall agree with numpy', { skip: PY ? false : 'no python3 with numpy' }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-np-'));
  try {
    const d = 10;
    const n = 150;
    const g = seededNormal(3);
    // correlated features with different scales, so the covariances do not commute
    const mix = new Float64Array(d * d).map(() => g());
    const make = (shift: number): Float64Array => {
      const out = new Float64Array(n * d);
      for (let i = 0; i < n; i++) {
        const z = Array.from({ length: d }, () => g());
        for (let a = 0; a < d; a++) {
          let s = shift;
          for (let b = 0; b < d; b++) s += mix[a * d + b] * z[b] * (1 + b / 3);
          out[i * d + a] = s;
        }
      }
      return out;
    };
    const x = make(0);
    const y = make(0.5);
    writeNpy(path.join(dir, 'x.npy'), { dtype: 'float64', shape: [n, d], data: x });
    writeNpy(path.join(dir, 'y.npy'), { dtype: 'float64', shape: [n, d], data: y });
    // The numpy side: FID through sqrtm by eigendecomposition of Σ₁Σ₂ (a different route:
    // the eigenvalues of Σ₁Σ₂ equal those of Σ₁^½Σ₂Σ₁^½), MMD² by full kernel matrices,
    // precision/recall by brute-force distance matrices.
    const script = `
import numpy as np, sys
d = sys.argv[1]
x = np.load(d + '/x.npy'); y = np.load(d + '/y.npy')
m1, m2 = x.mean(0), y.mean(0)
s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
ev = np.linalg.eigvals(s1 @ s2)
fid = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev.real, 0, None)).sum()
k = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3
m = x.shape[0]
kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
mmd = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
def dist(a, b): return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
rr = np.sort(dist(y, y), axis=1)[:, 3]
fr = np.sort(dist(x, x), axis=1)[:, 3]
dxy = dist(x, y)
precision = (dxy <= rr[None, :]).any(1).mean()
recall = (dxy <= fr[:, None]).any(0).mean()
print(repr(float(fid)), repr(float(mmd)), repr(float(precision)), repr(float(recall)))
`;
    const r = spawnSync(PY!, ['-c', script, dir], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const [fid, mmd, precision, recall] = r.stdout.trim().split(' ').map(Number);
    const ours = frechetDistance(featureStats(x, n, d), featureStats(y, n, d));
    assert.ok(Math.abs(ours - fid) < 1e-8 * Math.max(1, fid), `FID ${ours} vs numpy ${fid}`);
    const ourMmd = mmd2Unbiased(x, n, y, n, d);
    assert.ok(Math.abs(ourMmd - mmd) < 1e-9 * Math.max(1, Math.abs(mmd)), `MMD² ${ourMmd} vs numpy ${mmd}`);
    const pr = precisionRecall(x, n, y, n, d, { k: 3 });
    assert.equal(pr.precision, precision);
    assert.equal(pr.recall, recall);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
