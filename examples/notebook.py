"""hpo from Python, as in a notebook: load the study file, run it, re-train the best config.

    cd examples && python make_npz.py && python notebook.py
"""

import hpo


def main() -> None:
    spec = hpo.load_spec("shapes.yaml")
    print(f"{spec.name}: searches {', '.join(p.key for p in spec.space.params)} within "
          f"{spec.budget.max_params:,} parameters")

    study = hpo.run(spec, trials=6, storage="sqlite:///shapes.db", device="cpu",
                    on_trial=lambda t: print(f"  trial {t.number}: {t.state.name.lower()} {t.value or ''}"))
    best = study.best_trial
    print(f"best: trial {best.number}, {100 * best.value:.1f}% test accuracy, "
          f"{best.user_attrs['n_params']:,} parameters, {best.params}")

    history = hpo.train(best.user_attrs["config"], device="cpu")
    print("re-trained: " + ", ".join(f"epoch {r.epoch} {100 * r.test_accuracy:.1f}%" for r in history))


# hpo.run starts its workers as new processes, which import this file again: in a script, the
# work goes under this guard (a notebook needs none)
if __name__ == "__main__":
    main()
