export * from './frame';
export * from './messages';
export { MAX_STATE_ENTRIES, checkStateEntries, checkSyncDecision } from './state';
export * from './auth';
export * from './secure';
export * from './connection';
export * from './stats';
export type { MeasuredLink, WireMatrix } from './topology';
export * from './resume';
