import { ServiceError } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { ApiError, grpcCodeOf, temporalCallError } from '../../api/errors';

const grpc = (code: number, message = `grpc ${code}`) => new ServiceError(message, { cause: Object.assign(new Error(message), { code }) });

function mapped(err: unknown): ApiError | unknown {
  try {
    temporalCallError(err, 'retry');
  } catch (e) {
    return e;
  }
  throw new Error('temporalCallError returned');
}

describe('temporalCallError', () => {
  it.each([14, 4, 8, 1, 2])('answers 503 temporal_unavailable for the transient gRPC status %i', (code) => {
    const e = mapped(grpc(code)) as ApiError;
    expect(e).toBeInstanceOf(ApiError);
    expect([e.status, e.code]).toEqual([503, 'temporal_unavailable']);
  });

  it('answers 503 for a failure with no status (connection refused before any call)', () => {
    expect((mapped(new ServiceError('connect ECONNREFUSED')) as ApiError).status).toBe(503);
  });

  it.each([3, 9, 11])('answers 422 temporal_rejected for %i (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE): retrying will not help', (code) => {
    const e = mapped(grpc(code, 'WorkflowId length exceeds limit.')) as ApiError;
    expect([e.status, e.code]).toEqual([422, 'temporal_rejected']);
    expect(e.message).toContain('WorkflowId length exceeds limit.');
  });

  it.each([7, 16, 5])('rethrows %i (PERMISSION_DENIED, UNAUTHENTICATED, NOT_FOUND): a configuration fault, answered 500 and logged', (code) => {
    const err = grpc(code);
    expect(mapped(err)).toBe(err);
  });

  it('reads the status from the error or its cause', () => {
    expect(grpcCodeOf(Object.assign(new Error('x'), { code: 3 }))).toBe(3);
    expect(grpcCodeOf(grpc(14))).toBe(14);
    expect(grpcCodeOf(new Error('plain'))).toBeNull();
  });
});
