/** Momentum SGD with PyTorch's semantics: v ← μ·v + g;  w ← w − lr·v. On typed arrays, in place. */
export class MomentumSgd {
  readonly velocity: Float32Array;

  constructor(size: number, velocity?: Float32Array) {
    this.velocity = velocity ?? new Float32Array(size);
  }

  /**
   * One update with the gradient `grad × gradScale` (the mean of a summed gradient: scale 1/count).
   * The scaling is done here, in the same pass, rather than in a pass of its own over `grad` (one
   * pass over the parameters instead of two, on the step's critical path); each value is rounded
   * to float32 where a stored copy would be, so the bits are those of scaling first, then updating.
   * `grad` is left as it was.
   */
  step(weights: Float32Array, grad: Float32Array, lr: number, momentum: number, gradScale = 1): void {
    const v = this.velocity;
    for (let i = 0; i < weights.length; i++) {
      const vi = Math.fround(momentum * v[i] + Math.fround(grad[i] * gradScale));
      v[i] = vi;
      weights[i] -= lr * vi;
    }
  }
}
