// The shapes a config takes while it is loaded: the merged YAML tree, and where
// each key's value came from (for error messages). A leaf module, so that the
// loader's steps (interpolate, validate, speed-compat) share them without
// importing the loader.

/** A config before validation: nested maps of YAML values. */
export type Tree = Record<string, unknown>;
/** dotted key path -> where its value came from (a file, "command line", "defaults") */
export type Provenance = Map<string, string>;
