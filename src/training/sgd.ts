/** Momentum SGD with PyTorch's semantics: v ← μ·v + g;  w ← w − lr·v. On typed arrays, in place. */
export class MomentumSgd {
  readonly velocity: Float32Array;

  constructor(size: number, velocity?: Float32Array) {
    this.velocity = velocity ?? new Float32Array(size);
  }

  step(weights: Float32Array, grad: Float32Array, lr: number, momentum: number): void {
    const v = this.velocity;
    for (let i = 0; i < weights.length; i++) {
      v[i] = momentum * v[i] + grad[i];
      weights[i] -= lr * v[i];
    }
  }
}
