/**
 * TCCL: fault-tolerant collective communications for Node.js.
 *
 * @example
 * ```ts
 * import { Master, Communicator } from 'tccl';
 * const master = new Master({ port: 48148 });
 * await master.listen();
 * const comm = await Communicator.connect({ master: '127.0.0.1:48148' });
 * const grad = new Float32Array(1024).fill(1);
 * await comm.allReduce(grad, { op: 'avg' });
 * ```
 */
export {
  TcclError, PeerLostError, TimeoutError, AbortError, MismatchError, ProtocolError, AuthError, IntegrityError, TooFewPeersError, ClosedError, RootLostError,
  StateError, CudaUnavailableError, CudaError, InvalidArgumentError, errorFromCode,
} from './errors';
export { DType, ReduceOp, TensorArray, dtypeBytes } from './dtype';
export { Engine } from './engine';
export { EngineOptions, AllReduceOptions, AllReduceResult, QuantizationOptions, ExchangeOptions, ExchangeResult, ExchangeSend, ExchangeRecv } from './collective';
export { RingGroup, RingGroupOptions, parseAddress } from './group';
export const version = '0.1.0';
export { Master, MasterOptions } from './master/master';
export { EtcdLeadership, EtcdOptions } from './master/election';
export {
  Communicator, CommunicatorOptions, CommunicatorAllReduceResult, AllReduceManyOptions, ManyItem, UpdateTopologyResult,
  OptimizeTopologyOptions, OptimizeTopologyResult, BroadcastOptions, BroadcastResult, AllGatherOptions, AllGatherResult,
  ReduceScatterOptions, ReduceScatterResult,
  SyncSharedStateOptions, SyncSharedStateResult, PlainSharedState,
} from './peer/communicator';
export { init, allReduce, broadcast, allGather, reduceScatter, defaultCommunicator, shutdown, InitOptions } from './default';
export { Logger, LogLevel } from './log';
export { PROTOCOL_VERSION } from './protocol';
export type { WireMatrix as LinkMatrixReport } from './protocol';
export { LinkMatrix, Solution, SolveOptions, predictRingMs, solveRing } from './topology/solver';
export * from './diloco';
export * from './shared-state';
export {
  DeviceBuffer, DeviceBufferOptions, allReduceDevice, AllReduceTarget, DeviceAllReduceOptions, DeviceAllReduceResult,
  cudaInfo, CudaInfo, gpuEncode, gpuDecode, encodedSize as gpuEncodedSize, GpuCodec,
  GpuCodecOptions, NcclCommunicator,
} from './device';
