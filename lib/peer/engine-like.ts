/** The part of the data-plane Engine (lib/engine.ts) the Communicator uses; tests may substitute their own. */
import type { TensorArray } from '../dtype';
import type { AllReduceOptions, AllReduceResult, ExchangeOptions, ExchangeResult } from '../engine';
import type { NativePeer } from '../binding';

export type { AllReduceOptions, AllReduceResult };
export type NativePeerLike = NativePeer;

export interface Engine {
  readonly port: number;
  configure(epoch: number, myIndex: number, peers: NativePeer[], ticket: Uint8Array): void;
  allReduce<T extends TensorArray>(data: T, options?: AllReduceOptions<T>): Promise<AllReduceResult<T>>;
  /** Point-to-point transfer under one tag (the shared-state sync moves entries with it). */
  exchange(options: ExchangeOptions): Promise<ExchangeResult>;
  close(): Promise<void>;
}
