/**
 * A paging fake of Stripe's subscription list for the reconciliation benchmark, in front of stripe-mock:
 * `GET /v1/subscriptions` (limit, starting_after) and `GET /v1/subscriptions/:id` are served from an
 * in-memory list; every other request is proxied to stripe-mock unchanged.
 */
import http from 'node:http';

/** The Stripe fields reconciliation reads, in the 2025+ shape (period on the item). */
export interface FakeSubscription {
  id: string;
  customer: string;
  status: string;
  priceId: string | null;
  currentPeriodStart: number | null;
  currentPeriodEnd: number | null;
  cancelAtPeriodEnd: boolean;
}

function toStripe(s: FakeSubscription): Record<string, unknown> {
  return {
    id: s.id,
    object: 'subscription',
    customer: s.customer,
    status: s.status,
    cancel_at_period_end: s.cancelAtPeriodEnd,
    canceled_at: null,
    trial_end: null,
    livemode: false,
    items: {
      object: 'list',
      has_more: false,
      data: [
        {
          id: `si_${s.id.slice(4)}`,
          object: 'subscription_item',
          price: s.priceId ? { id: s.priceId, object: 'price' } : null,
          current_period_start: s.currentPeriodStart,
          current_period_end: s.currentPeriodEnd,
        },
      ],
    },
  };
}

export interface PagingStripeFake {
  url: string;
  /** Replaces the list Stripe "has". */
  setSubscriptions(list: FakeSubscription[]): void;
  /** Requests served from the list (list pages + retrieves). */
  served(): { pages: number; retrieves: number; proxied: number };
  stop(): Promise<void>;
}

/** Starts the fake on 127.0.0.1:port, proxying the rest to `upstream` (stripe-mock). */
export async function startPagingStripeFake(opts: { port: number; upstream: string }): Promise<PagingStripeFake> {
  let list: FakeSubscription[] = [];
  let index = new Map<string, number>();
  const counts = { pages: 0, retrieves: 0, proxied: 0 };
  const upstream = new URL(opts.upstream);
  const json = (res: http.ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'request-id': 'req_fake' });
    res.end(text);
  };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://fake');
    if (req.method === 'GET' && u.pathname === '/v1/subscriptions') {
      counts.pages++;
      const limit = Math.min(100, Math.max(1, Number(u.searchParams.get('limit') ?? 10)));
      const after = u.searchParams.get('starting_after');
      const start = after ? (index.get(after) ?? list.length) + 1 : 0;
      const page = list.slice(start, start + limit);
      json(res, 200, { object: 'list', url: '/v1/subscriptions', has_more: start + limit < list.length, data: page.map(toStripe) });
      return;
    }
    const m = /^\/v1\/subscriptions\/([^/]+)$/.exec(u.pathname);
    if (req.method === 'GET' && m) {
      counts.retrieves++;
      const i = index.get(decodeURIComponent(m[1]!));
      if (i === undefined) {
        json(res, 404, { error: { type: 'invalid_request_error', code: 'resource_missing', message: `No such subscription: '${m[1]}'`, param: 'id' } });
      } else {
        json(res, 200, toStripe(list[i]!));
      }
      return;
    }
    counts.proxied++;
    const p = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    p.on('error', () => json(res, 502, { error: { type: 'api_error', message: 'stripe-mock unreachable' } }));
    req.pipe(p);
  });
  await new Promise<void>((resolve) => server.listen(opts.port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${opts.port}`,
    setSubscriptions(next) {
      list = next;
      index = new Map(next.map((s, i) => [s.id, i]));
    },
    served: () => ({ ...counts }),
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // The Stripe SDK keeps connections alive: drop them or close() waits for their idle timeout.
        server.closeAllConnections();
      }),
  };
}
