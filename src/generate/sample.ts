// -p sample: a PNG grid, one row per class (sample.sample_classes or all), from
// the EMA weights of a checkpoint or its raw weights, named after the step and
// the sampling settings (grid-<step>-ddim50-cfg4.png, ...-raw.png for the raw
// weights), so that grids of other settings never overwrite each other.
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

import { stepDirName } from '../checkpoint/index.js';
import type { Config } from '../config/schema.js';
import { sample } from '../diffusion/sampler.js';
import { writeFileAtomic, writeNpy } from '../io/npy.js';
import { Progress } from '../progress.js';
import { EventWriter } from '../tensorboard/index.js';
import { labelledGridPng, toUint8NHWC } from './images.js';
import { clipDenoisedFor, isLatentModel, latentDecoder, unscaleLatents } from './decode.js';
import { emaWarning } from './ema-check.js';
import { loadForGeneration } from './model.js';

export interface SampleResult {
  file: string;
  rows: number;
  cols: number;
  classes: number[];
  ckpt: string;
  seconds: number;
}

/**
 * Runs the sampler over `labels` in batches; returns [N, C, H, W].
 * `onProgress(done)` follows every reverse step, in images-equivalent:
 * a batch of n images that finished i of its k steps adds n * i / k.
 */
export async function generate(
  g: ReturnType<typeof loadForGeneration>,
  s: Config['sample'] | Config['inference'],
  labels: Int32Array,
  batch: number,
  onProgress?: (done: number) => void,
): Promise<Float32Array> {
  const { inChannels: C, inputSize: H } = g.model.config;
  const per = C * H * H;
  const out = new Float32Array(labels.length * per);
  for (let a = 0; a < labels.length; a += batch) {
    const y = labels.slice(a, Math.min(labels.length, a + batch));
    const x = await sample(g.model, g.coefs, {
      N: y.length,
      y,
      sampler: s.sampler,
      steps: s.steps,
      eta: s.eta,
      guidanceScale: s.guidance_scale,
      guidanceChannels: s.guidance_channels === 'all' ? 'all' : Number(s.guidance_channels),
      clipDenoised: clipDenoisedFor(g, s),
      useEma: s.use_ema,
      onProgress: onProgress && ((i, n) => onProgress(a + (y.length * i) / n)),
    });
    out.set(x, a * per);
  }
  return out;
}

/** Longest row label drawn; longer class names are cut with an ellipsis. */
const MAX_LABEL = 24;

/**
 * The class folder names of an image-folder run (sorted, as the data set
 * numbers them: folder i is label i), or null when the run's data is not a
 * class-folder image folder, or the folder is gone or holds more class
 * folders than the model has classes (then rows are labelled with indices).
 */
export function imageFolderClassNames(c: Config, numClasses: number): string[] | null {
  if (c.data.name !== 'image_folder' || !c.data.root || numClasses === 0) return null;
  let names: string[];
  try {
    names = readdirSync(c.data.root).sort().filter((n) => !n.startsWith('.') && statSync(path.join(c.data.root!, n)).isDirectory());
  } catch {
    return null;
  }
  return names.length > 0 && names.length <= numClasses ? names : null;
}

/**
 * The settings that change what a grid draws, as a file-name part: the sampler
 * and its respacing ("ddim50": DDIM over the DDIM-strided 50 steps, "ddpm250",
 * "ddim-250": DDIM over 250 evenly spaced steps, "ddpm-ddim50"), DDIM's eta when
 * not 0, the guidance scale, and the guided channels when they are not DiT's.
 */
export function samplingTag(s: Pick<Config['sample'], 'sampler' | 'steps' | 'eta' | 'guidance_scale' | 'guidance_channels'>): string {
  const steps = s.steps.replace(/,/g, '_');
  const own = s.sampler === 'ddim' ? /^ddim[0-9]+$/.test(s.steps) : /^[0-9_]+$/.test(steps);
  const sampler = own ? (s.sampler === 'ddim' ? steps : `ddpm${steps}`) : `${s.sampler}-${steps}`;
  const eta = s.sampler === 'ddim' && s.eta !== 0 ? `-eta${s.eta}` : '';
  const channels = s.guidance_scale !== 1 && s.guidance_channels === 'all' ? '-all' : '';
  return `${sampler}${eta}-cfg${s.guidance_scale}${channels}`;
}

/** The grid's file when sample.out is not set: named after the step and the settings, the raw weights' apart from the EMA one. */
export function defaultGridFile(c: Config, step: number): string {
  return path.join(c.experiment_dir, 'samples', `grid-${stepDirName(step)}-${samplingTag(c.sample)}${c.sample.use_ema ? '' : '-raw'}.png`);
}

export async function runSample(c: Config, opts: { ckpt?: string | null; log?: (m: string) => void; progressStream?: NodeJS.WriteStream } = {}): Promise<SampleResult> {
  const log = opts.log ?? ((m: string) => process.stdout.write(m + '\n'));
  const started = Date.now();
  const s = c.sample;
  const g = loadForGeneration(c, opts.ckpt !== undefined ? opts.ckpt : s.ckpt, log);
  try {
    const emaNote = emaWarning(g.trained, g.step, s.use_ema);
    if (emaNote) log(emaNote);
    const { inChannels: C, inputSize: H, numClasses } = g.model.config;
    const names = imageFolderClassNames(c, numClasses);
    // By default one row per class; for an image folder with fewer class folders than
    // model.num_classes, one per folder (the other labels never had an image).
    const classes = numClasses === 0 ? [0] : (s.sample_classes ?? Array.from({ length: names ? names.length : numClasses }, (_, i) => i));
    for (const k of classes) {
      if (numClasses > 0 && k >= numClasses) throw new RangeError(`sample.sample_classes: class ${k} is outside [0, ${numClasses}) of the checkpoint's model`);
    }
    const cols = s.num_per_class;
    const labels = Int32Array.from(classes.flatMap((k) => new Array<number>(cols).fill(k)));
    log(`sample: ${classes.length} x ${cols} images from ${g.ckpt} (${s.use_ema ? 'EMA' : 'raw'} weights), ${s.sampler} ${s.steps}, guidance ${s.guidance_scale}${s.guidance_scale !== 1 ? ` (guidance_channels ${s.guidance_channels})` : ''}`);
    // The VAE first: a wrong vae.path fails before minutes of sampling, not after.
    const dec = isLatentModel(g) ? await latentDecoder(c, g, log) : null;
    try {
      const progress = new Progress('sample', labels.length, opts.progressStream ?? process.stderr, 0, { counts: false });
      const x = await generate(g, s, labels, s.batch_size, (d) => progress.tick(d));
      progress.done();
      const file = s.out ?? defaultGridFile(c, g.step);
      mkdirSync(path.dirname(file), { recursive: true });
      let img = x;
      let IC = C;
      let IH = H;
      if (dec) {
        img = await dec.decode(x, labels.length, 'sample: decoding');
        IC = dec.vae.config.outChannels;
        IH = H * dec.vae.downFactor;
      }
      if (IC === 3 || IC === 1) {
        const imgs = toUint8NHWC(img, labels.length, IC, IH, IH);
        const zoom = Math.max(1, Math.floor(64 / IH)); // small images are enlarged for viewing
        // each row is labelled with its class folder's name, else its index (unconditional models: none)
        const cut = (n: string) => (n.length > MAX_LABEL ? n.slice(0, MAX_LABEL - 1) + '…' : n);
        const labelsOfRows = numClasses === 0 ? [''] : classes.map((k) => (names && k < names.length ? cut(names[k]) : String(k)));
        const gr = await labelledGridPng(imgs, classes.length, cols, IH, IH, IC, labelsOfRows, 2, zoom);
        writeFileAtomic(file, [gr.png]);
        if (c.tensorboard) {
          const tb = new EventWriter(c.experiment_dir);
          try {
            tb.image(g.step, s.use_ema ? 'samples/grid' : 'samples/grid-raw', gr.png, gr.W, gr.H, IC);
          } finally {
            tb.close();
          }
        }
      } else {
        // Latents and no VAE configured (vae.path): the unscaled latents, for decoding elsewhere.
        const f = file.replace(/\.png$/i, '') + '.npy';
        writeNpy(f, { dtype: 'float32', shape: [labels.length, C, H, H], data: unscaleLatents(x, c.vae.scale_factor) });
        log(`sample: latents (divided by vae.scale_factor ${c.vae.scale_factor}) in ${f}; set vae.path to decode them to images`);
        return { file: f, rows: classes.length, cols, classes, ckpt: g.ckpt, seconds: (Date.now() - started) / 1000 };
      }
      const rowsText = numClasses === 0 ? 'unconditional' : `classes ${classes.map((k) => (names && k < names.length ? `${k} ${names[k]}` : String(k))).join(', ')}`;
      log(`sample grid: ${file} (${s.use_ema ? 'EMA' : 'raw'} weights; rows: ${rowsText}; ${((Date.now() - started) / 1000).toFixed(1)} s)`);
      return { file, rows: classes.length, cols, classes, ckpt: g.ckpt, seconds: (Date.now() - started) / 1000 };
    } finally {
      dec?.dispose();
    }
  } finally {
    g.model.dispose();
  }
}
