"""The training kind: split federated learning rounds between devices and a server
(EdgeSplit, thesis chapter 4). Each device trains the first blocks of a model, the server the
rest; activations, gradients and weights cross the emulated links as bytes."""
