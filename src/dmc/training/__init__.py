"""What every method trains and evaluates with: where computation runs (runtime), the task it is given,
the one optimisation loop (fit), feature caches and batches, label maps, and prediction.

It sits below the methods and above the models and numerics: methods import it, it imports no method.
"""
