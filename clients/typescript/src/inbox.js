// What has arrived and not yet been taken (frames of a connection, a client's events): push,
// end, and an awaitable take with a time limit. One implementation for every transport.

export class Inbox {
  constructor() {
    this.items = [];
    this.waiters = [];
    this.ended = false;
    this.error = null;
  }

  push(item) {
    this.items.push(item);
    this.#wake();
  }

  /** Ends the inbox (with `error`, what `take` then throws); false if it had ended already. */
  end(error = null) {
    if (this.ended) return false;
    this.ended = true;
    this.error = error;
    this.#wake();
    return true;
  }

  #wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** The next item; null once ended (or the end's error thrown); rejects after `timeout` ms. */
  async take(timeout, what = "frame") {
    for (;;) {
      if (this.items.length) return this.items.shift();
      if (this.ended) {
        if (this.error) throw this.error;
        return null;
      }
      await new Promise((resolve, reject) => {
        let timer;
        const done = () => { clearTimeout(timer); resolve(); };
        this.waiters.push(done);
        if (timeout !== undefined) {
          timer = setTimeout(() => {
            this.waiters = this.waiters.filter((w) => w !== done);
            reject(new Error(`no ${what} within ${timeout} ms`));
          }, timeout);
        }
      });
    }
  }
}
