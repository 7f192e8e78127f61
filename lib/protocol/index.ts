export * from './frame';
export * from './messages';
export * from './auth';
export * from './connection';
