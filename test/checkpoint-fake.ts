// A pure-TypeScript stand-in for DiTModel's checkpoint surface (no addon needed).
import type { CheckpointModel } from '../src/checkpoint/index.js';
import type { NoiseState, ParamInfo, Slot } from '../src/native.js';

export class FakeModel implements CheckpointModel {
  private readonly store = new Map<string, Float32Array>();
  noise: NoiseState = { seed: 1, offset: 0 };
  step = 0;
  constructor(readonly infos: ParamInfo[]) {
    for (const p of infos) for (const s of ['model', 'ema', 'adam_m', 'adam_v']) {
      if (p.trainable || s === 'model' || s === 'ema') this.store.set(`${s}:${p.name}`, new Float32Array(p.numel));
    }
  }
  static make(width = 64): FakeModel {
    const shapes: [string, number[], boolean][] = [
      ['pos_embed', [1, 4, width], false], ['x_embedder.proj.weight', [width, 3, 2, 2], true], ['blocks.0.attn.qkv.weight', [3 * width, width], true],
      ['final_layer.linear.bias', [12], true],
    ];
    return new FakeModel(shapes.map(([name, shape, trainable]) => ({ name, shape, numel: shape.reduce((a, b) => a * b, 1), trainable })));
  }
  /** Sets every value of every slot to `v` (slot-specific offsets). */
  fill(v: number): void {
    for (const [k, a] of this.store) a.fill(v + (k.startsWith('ema') ? 0.5 : k.startsWith('adam_m') ? 0.25 : k.startsWith('adam_v') ? 0.125 : 0));
    this.step = v;
    this.noise = { seed: 1, offset: v * 10 };
  }
  params(): ParamInfo[] { return this.infos; }
  readParam(name: string, slot: Slot = 'model'): Float32Array {
    const a = this.store.get(`${slot}:${name}`);
    if (!a) throw new Error(`no ${slot} for ${name}`);
    return a.slice();
  }
  writeParam(name: string, slot: Slot, data: Float32Array): void {
    const a = this.store.get(`${slot}:${name}`);
    if (!a || a.length !== data.length) throw new Error(`bad write ${slot} ${name}`);
    a.set(data);
  }
  getNoiseState(): NoiseState { return { ...this.noise }; }
  setNoiseState(s: NoiseState): void { this.noise = { ...s }; }
  getStep(): number { return this.step; }
  setStep(s: number): void { this.step = s; }
}
