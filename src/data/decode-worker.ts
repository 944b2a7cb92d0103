// Worker thread of ImageFolderDataset: reads and decodes one batch of images
// (sharp, then ADM's centre crop) so that the main thread (and the native
// step) never wait on it.
import { parentPort } from 'node:worker_threads';

import { decodeSample, type DecodeOptions } from './image-sample.js';

export interface DecodeRequest {
  id: number;
  files: string[];
  flips: Uint8Array;
  opts: DecodeOptions;
}
export interface DecodeReply {
  id: number;
  x: Float32Array;
  /** samples that could not be read: index in the batch and the reason */
  bad: { i: number; file: string; reason: string }[];
}

parentPort?.on('message', (req: DecodeRequest) => {
  void (async () => {
    const n = req.files.length;
    const per = req.opts.channels * req.opts.size * req.opts.size;
    const x = new Float32Array(n * per);
    const bad: DecodeReply['bad'] = [];
    for (let i = 0; i < n; i++) {
      try {
        await decodeSample(req.files[i], req.opts, req.flips[i] === 1, x, i * per);
      } catch (e) {
        const msg = (e as Error).message;
        // DataError messages start with the file; the reply names it separately.
        bad.push({ i, file: req.files[i], reason: msg.startsWith(req.files[i] + ': ') ? msg.slice(req.files[i].length + 2) : msg });
      }
    }
    const reply: DecodeReply = { id: req.id, x, bad };
    parentPort!.postMessage(reply, [x.buffer]);
  })();
});
