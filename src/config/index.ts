// Configuration: schema, recursive loading, overrides, phases, validation.
export { SCHEMA, PHASES, defaultsOf, describeSchema, type Config, type GenerationConfig, type Phase } from './schema.js';
export { loadConfig, configToYaml, baseChain, parseOverride, type LoadOptions, type LoadedConfig } from './load.js';
export { ConfigErrorList } from './problems.js';
