// Typed errors. Every message says what was found and what was expected, and
// names the file and key (or argument) it concerns.

export class SpeedTrainError extends Error {
  override name = 'SpeedTrainError';
}

/** A configuration problem: `file` and the dotted `keyPath` locate it. */
export class ConfigError extends SpeedTrainError {
  override name = 'ConfigError';
  constructor(
    readonly keyPath: string,
    message: string,
    readonly file?: string,
  ) {
    super(`${file ? file + ': ' : ''}${keyPath ? keyPath + ': ' : ''}${message}`);
  }
}

/** A data file or folder that cannot be used. */
export class DataError extends SpeedTrainError {
  override name = 'DataError';
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
  }
}

/** A checkpoint or tensor file that is missing, truncated or malformed. */
export class CheckpointError extends SpeedTrainError {
  override name = 'CheckpointError';
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
  }
}
