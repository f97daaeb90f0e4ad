'use strict';
// The AWS deployment's timing, derived from one set of parameters (serverless.yml `params`), so that no
// timeout, visibility, lease or wait is a literal that must agree with another by hand. serverless.yml
// reads every value below as ${file(infra/aws/limits.js):NAME}; tests/test_deploy_limits.py checks the
// relations on the packaged template.
//
//   workerTimeout    the worker function's timeout (s)
//   apiTimeout       the api function's timeout (s); an HTTP API integration gives up at 30 s
//   batchingWindow   the SQS event source's MaximumBatchingWindowInSeconds
//   workerConcurrency  reserved concurrency of the worker, and the event source's maximum concurrency
//   maxReceiveCount  deliveries before SQS moves a job message to the dead-letter queue

const HTTP_API_LIMIT_S = 30; // API Gateway HTTP API: maximum integration timeout
const SCHEDULE_S = 300; // the reconcile function's schedule, rate(5 minutes)

module.exports = async ({ resolveVariable }) => {
  const param = async (name) => {
    const value = Number(await resolveVariable(`param:${name}`));
    if (!Number.isFinite(value)) throw new Error(`param ${name} must be a number`);
    return value;
  };
  const workerTimeout = await param('workerTimeout');
  const apiTimeout = await param('apiTimeout');
  const batchingWindow = await param('batchingWindow');
  const workerConcurrency = await param('workerConcurrency');
  const maxReceiveCount = await param('maxReceiveCount');
  const problems = [];
  if (workerTimeout < 30 || workerTimeout > 900) problems.push('workerTimeout must be 30..900 s (Lambda allows up to 900)');
  if (apiTimeout < 5 || apiTimeout >= HTTP_API_LIMIT_S) problems.push(`apiTimeout must be 5..${HTTP_API_LIMIT_S - 1} s (an HTTP API gives up at ${HTTP_API_LIMIT_S} s)`);
  if (batchingWindow < 0 || batchingWindow > 300) problems.push('batchingWindow must be 0..300 s');
  if (workerConcurrency < 2 || workerConcurrency > 1000) problems.push('workerConcurrency must be 2..1000 (the event source\'s maximum concurrency range)');
  if (maxReceiveCount < 1 || maxReceiveCount > 1000) problems.push('maxReceiveCount must be 1..1000');
  if (problems.length) throw new Error(problems.join('; '));
  // AWS: the queue's visibility timeout at least six times the function's timeout, plus the batching window
  const visibilityTimeout = 6 * workerTimeout + batchingWindow;
  const deadLetterTimeout = 30;
  return {
    workerTimeout,
    apiTimeout,
    batchingWindow,
    workerConcurrency,
    maxReceiveCount,
    visibilityTimeout,
    // a running job's lease: renewed by the heartbeat up to the invocation's end, so one timeout's worth
    // less a margin for reporting the batch (adapters/aws/handlers.py DEADLINE_MARGIN_S)
    leaseS: workerTimeout - 10,
    // a job is lost only once its message can no longer be invisible behind a crashed delivery, and one
    // schedule period later
    reconcileAfterS: visibilityTimeout + SCHEDULE_S,
    // the longest wait the api holds a request (long-poll, buffered SSE), inside its own timeout
    streamWaitS: apiTimeout - 5,
    deadLetterTimeout,
    deadLetterVisibility: 6 * deadLetterTimeout,
  };
};
