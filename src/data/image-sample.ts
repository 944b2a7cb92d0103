// One training sample from an image file: decode (sharp, limits first), ADM
// centre crop to image_size (or the exact-size check), [-1, 1] CHW floats.
import { DataError } from '../errors.js';
import { centerCropArr, rgbToChw } from './center-crop.js';
import { decodeImageFile, type ImageLimits } from './image-decode.js';

export interface DecodeOptions {
  size: number;
  channels: number;
  /** ADM centre crop + resize; when false the image must already be size x size */
  centerCrop: boolean;
  limits: ImageLimits;
}

/** The image as RGB uint8 [size, size, 3], centre-cropped as ADM/DiT do. */
export async function loadCroppedRgb(file: string, o: Omit<DecodeOptions, 'channels'>): Promise<Uint8Array> {
  const img = await decodeImageFile(file, o.limits);
  const S = o.size;
  if (!o.centerCrop) {
    if (img.width !== S || img.height !== S) {
      throw new DataError(file, `image is ${img.width}x${img.height}, expected ${S}x${S} (data.image_size; set data.center_crop: true to crop and resize)`);
    }
    return img.data;
  }
  return centerCropArr(img.data, img.width, img.height, S);
}

/** Decodes `file` into out[offset ..] as [C, size, size] in [-1, 1], mirrored when `flip`. */
export async function decodeSample(file: string, o: DecodeOptions, flip: boolean, out: Float32Array, offset: number): Promise<void> {
  rgbToChw(await loadCroppedRgb(file, o), o.size, o.channels, flip, out, offset);
}
