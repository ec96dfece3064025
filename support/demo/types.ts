/** The demo's stack, options and report shapes (see support/demo/steps.ts). */

export type Obj = Record<string, any>;

/** The stack the demo needs: a dev stack on the local emulators, with the emulator gateway. */
export interface DemoStack {
  apiUrl: string;
  temporalUiUrl: string;
  temporalAddress: string;
  databaseUrl: string;
  /** The emulator gateway (what the API and worker use as Stripe). */
  stripeApiBase: string;
  /** localstripe itself: the demo changes things behind the system's back here. */
  localstripeUrl: string;
  stripeSecretKey: string;
  webhookSecret: string;
  adminToken: string;
  /** Bearer token of the app-facing endpoints, when the API was started with API_TOKEN. */
  apiToken?: string | null;
  /** The worker's DUNNING_RETRY_DAYS (null: the default 1,3,5,7). */
  dunningRetryDays: string | null;
  /** Mailpit's web UI and API (null: the stack sends no email, or not to a local Mailpit). */
  mailpitUrl: string | null;
}

export interface DemoOptions {
  /** Longest wait for any one expected state (default 30 s). */
  stepTimeoutMs?: number;
  /** Where the step lines go (default stdout). */
  print?: (line: string) => void;
  /** Longest wait for the first scheduled dunning retry; a later one is reported, not awaited (default 90 s). */
  maxScheduledRetryWaitMs?: number;
}

export interface StepResult {
  step: number;
  title: string;
  ok: boolean;
  line: string;
  error?: string;
}

export interface DemoSummary {
  customerId: string | null;
  subscriptionId: string | null;
  events: number;
  deliveries: number;
  applied: number;
  duplicatesDropped: number;
  bySource: { localstripe: number; gateway: number; fixture: number };
  dunning: string;
  /** What Mailpit showed of the dunning email (or why nothing). */
  email: string;
  drift: string;
  rows: [string, string][];
}

export interface DemoReport {
  ok: boolean;
  steps: StepResult[];
  customerId: string | null;
  summary: DemoSummary;
}
