/**
 * Sessions a master did not issue: a peer of the run resuming after the master restarted (or at a standby that
 * took over). The peer proves the run token (the handshake), its session secret (derived from the token,
 * lib/protocol/resume.ts) and that its session is of this run; its report must be consistent with what the
 * master holds (Coordinator.checkRejoin). Then it keeps its id and helps rebuild its group (resume.ts).
 */
import type { Hello, Register } from '../protocol';
import { parseSessionId, sessionSecretMatches } from '../protocol';
import type { RejoinReport } from './resume';

/** A refusal (`error { code, message }`) or the report to rebuild from, with the run the session belongs to. */
export type SessionCheck = { code: string; message: string } | { report: RejoinReport; run: string };

/**
 * Checks a resume with a session this master does not know. `runId` is the master's run (undefined until its
 * first peer), `observedHost` the address the control connection comes from, `check` the coordinator's
 * consistency check of the report.
 */
export function checkUnknownSession(
  token: string | undefined, runId: string | undefined, hello: Hello, m: Register, observedHost: string,
  check: (r: RejoinReport) => string | undefined,
): SessionCheck {
  const session = hello.session!;
  const id = parseSessionId(session);
  if (!id || !sessionSecretMatches(token, session, m.secret ?? hello.secret)) {
    return { code: 'AUTH', message: 'authentication failed: the session secret does not match (a session of another run or another token?)' };
  }
  if (runId !== undefined && id.run !== runId) {
    return { code: 'AUTH', message: `authentication failed: the session belongs to another run (${id.run}; this master runs ${runId})` };
  }
  if (id.group !== m.peerGroup) return { code: 'AUTH', message: `authentication failed: the session is of group ${id.group}, not ${m.peerGroup}` };
  if (!m.resume) {
    return { code: 'DROPPED', message: 'this master does not know the session and the peer sent no resume report (it was dropped, or the master restarted)' };
  }
  const report: RejoinReport = { peer: id.peer, group: id.group, host: m.advertiseAddress || observedHost, port: m.dataPort, label: m.label, autoAdmit: m.admission === 'auto', identity: m.identity, report: m.resume };
  const bad = check(report);
  if (bad) return { code: 'RESUME_REFUSED', message: `resume refused: ${bad}` };
  return { report, run: id.run };
}
