// A tiny event emitter (no DOM dependency, so the library also runs under Node's test runner).

/**
 * @template {Record<string, unknown>} Events
 */
export class Emitter {
  constructor() {
    /** @type {Map<keyof Events, Set<(value: any) => void>>} */
    this.handlers = new Map();
  }

  /**
   * @template {keyof Events} K
   * @param {K} name
   * @param {(value: Events[K]) => void} fn
   * @returns {() => void} a function that removes the handler
   */
  on(name, fn) {
    let set = this.handlers.get(name);
    if (!set) this.handlers.set(name, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * @template {keyof Events} K
   * @param {K} name
   * @param {Events[K]} value
   */
  emit(name, value) {
    for (const fn of [...(this.handlers.get(name) ?? [])]) {
      try {
        fn(value);
      } catch (e) {
        console.error(`handler for ${String(name)} failed`, e);
      }
    }
  }
}
