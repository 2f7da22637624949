"""Caption generation (lrcn_apps/caption/generate.py) with nets/lrcn_caption_deploy.prototxt.

Most tests program the word net as a first-order Markov chain (`program_markov`): the LSTMs
copy the previous word into their state, so predict's weights give the next word's logits as a
table row, table[previous word]. That makes the models whose greedy / beam behaviour a test
needs (a deterministic sentence, a case where beam search must beat greedy) easy to write down.
An optional random image term makes the logits depend on the features too.
"""

import json
import os

import numpy as np
import pytest
import torch

import compiler
from runtime import weights as weight_files
from runtime.net import Net
from lrcn_apps.caption import generate
from lrcn_apps.caption.coco import DataError, load_results
from lrcn_apps.caption.generate import Caption, Captioner
from lrcn_apps.caption.text import EOS_INDEX

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "nets", "lrcn_caption_deploy.prototxt")
TRAIN_NET = os.path.join(REPO, "nets", "lrcn_caption.prototxt")
VOCABULARY = os.path.join(REPO, "data", "caption_shapes", "prepared", "vocabulary.txt")
IMAGES = os.path.join(REPO, "data", "caption_shapes", "images")
TEST_IMAGES = [os.path.join(IMAGES, "test_%06d.png" % i) for i in (581, 582, 583, 584)]
VARIANTS = [("factored", "2-layer"), ("unfactored", "1-layer"), ("unfactored", "2-layer")]
V = 48
GATE = 20.0                       # saturates the input and output gates: i, o = 1
FORGET = -200.0                   # f = 0 exactly (no tiny products of f decaying to denormals)
H_ON = float(np.tanh(1.0))        # h of a unit whose cell holds 1


# ------------------------------------------------------------------------------ helpers

def program_markov(captioner, table, image_scale=0.0, seed=0, image_words=None):
    """Make the (factored 2-layer) word net a Markov chain: logits = table[previous word].

    Embed puts word w on unit w; each LSTM unit w < V copies its input into a cell with
    saturated gates (no memory: f = 0), so h2[w] = tanh(1) for the previous word only, and
    predict's column w holds table[w] / tanh(1). Units >= V carry the image: with image_scale
    random static weights and predict columns add a random image term to the logits; with
    image_words {feature index m: word}, feature m adds +10 to that word's logit.
    """
    generator = torch.Generator().manual_seed(seed)
    blobs = {name: unit.blobs for name, unit
             in zip(captioner.word_net.layer_names, captioner.word_net.units) if len(unit.blobs)}
    with torch.no_grad():
        for parameter in captioner.word_net.parameters():
            parameter.zero_()
        words = torch.arange(V)
        blobs["embedding"][0][words, words] = 1.0
        hidden = blobs["lstm1"][-1].shape[1]
        for layer, scale in (("lstm1", 1.0), ("lstm2", H_ON)):
            W_xc, b_c = blobs[layer][0], blobs[layer][1]
            b_c[:hidden], b_c[hidden:2 * hidden], b_c[2 * hidden:3 * hidden] = GATE, FORGET, GATE
            W_xc[3 * hidden + words, words] = GATE / scale
        predict = blobs["predict"][0]
        predict[:, :V] = torch.as_tensor(table, dtype=torch.float32).t() / H_ON
        W_static = blobs["lstm2"][2]
        if image_scale:
            rest = torch.arange(V, hidden)
            W_static[3 * hidden + rest] = torch.randn(len(rest), W_static.shape[1],
                                                      generator=generator) * 0.3
            predict[:, V:] = torch.randn(V, hidden - V, generator=generator) * image_scale
        for feature, word in (image_words or {}).items():
            W_static[3 * hidden + V + feature, feature] = GATE
            predict[word, V + feature] = 10.0 / H_ON


def chain_table(*sentence):
    """A table under which `sentence` (then EOS) has probability ~1 (logit margins of 30)."""
    table = np.zeros((V, V))
    table[:, EOS_INDEX] = 30.0
    for previous, word in zip((EOS_INDEX,) + sentence, sentence):
        table[previous] = 0.0
        table[previous, word] = 30.0
    return table


def random_table(seed=1, ending_rows=0.3):
    """Random logits; a share of the words strongly prefer EOS next, so captions end at
    various lengths (a random chain alone cycles forever)."""
    rng = np.random.default_rng(seed)
    table = rng.normal(0.0, 2.0, (V, V))
    table[rng.random(V) < ending_rows, EOS_INDEX] += 6.0
    table[EOS_INDEX, EOS_INDEX] = -10.0          # no empty captions
    return table


def random_features(count, seed=1):
    return torch.randn(count, 128, generator=torch.Generator().manual_seed(seed))


def run_main(main, argv, capsys):
    """(exit status, stdout, stderr) of a command's main()."""
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def captioner():
    """A factored 2-layer captioner; each test programs the weights it needs."""
    return Captioner(DEPLOY, None, VOCABULARY)


@pytest.fixture(scope="module")
def random_markov():
    """A captioner of its own (tests reprogram `captioner`): a random chain whose captions
    end at various lengths or run to the length limit, with an image term."""
    model = Captioner(DEPLOY, None, VOCABULARY)
    program_markov(model, random_table(), image_scale=0.1)
    return model


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A .caffemodel saved by the TRAINING net (its fillers: an untrained model)."""
    path = str(tmp_path_factory.mktemp("weights") / "lrcn_caption_iter_0.caffemodel")
    Net(TRAIN_NET, phase="TEST", stages=("factored", "2-layer", "test-on-val")).save(path)
    return path


def rewritten_snapshot(snapshot, path, drop=()):
    """A copy of the snapshot without the layers named in `drop`."""
    net = weight_files.read_net_file(snapshot)
    kept = [layer for layer in net.layer if layer.name not in drop]
    del net.layer[:]
    net.layer.extend(kept)
    weight_files.write_bytes_atomically(str(path), net.SerializeToString())
    return str(path)


# ------------------------------------------------------------------------------ the deploy net

@pytest.mark.parametrize("stages", VARIANTS)
def test_deploy_net_matches_training_net_by_layer_name(stages):
    trained = compiler.compile_net(TRAIN_NET, "TRAIN", stages)
    image = compiler.compile_net(DEPLOY, "TEST", ("image",) + stages)
    word = compiler.compile_net(DEPLOY, "TEST", ("word",) + stages)
    training_params = {layer.name: layer.param_shapes for layer in trained.layers
                       if layer.param_shapes}
    deploy_params = {layer.name: layer.param_shapes for layer in image.layers + word.layers
                     if layer.param_shapes}
    assert deploy_params == training_params
    # The features fed to the word stage are fc8's; the logits are predict's over the vocabulary.
    assert image.blobs["fc8"][1:] == trained.blobs["fc8"][1:]
    assert word.blobs["image_features"][1:] == trained.blobs["fc8"][1:]
    assert word.blobs["predict"][2:] == trained.blobs["predict"][2:] == (V,)
    assert word.blobs["probs"] == (1, 1, V)


def test_training_snapshot_loads_into_every_deploy_layer(snapshot):
    trained = Net(TRAIN_NET, weights=snapshot, phase="TEST",
                  stages=("factored", "2-layer", "test-on-val"))
    loaded = Captioner(DEPLOY, snapshot, VOCABULARY)
    compared = 0
    for net in (loaded.image_net, loaded.word_net):
        for name, blobs in net.params.items():
            for blob, expected in zip(blobs, trained.params[name]):
                np.testing.assert_array_equal(blob.data, expected.data)
                compared += 1
    assert compared == 8 + 1 + 3 + 4 + 2       # CNN, embedding, lstm1, lstm2, predict


def test_weights_lacking_a_layer_are_refused(snapshot, tmp_path):
    partial = rewritten_snapshot(snapshot, tmp_path / "no_lstm2.caffemodel", drop=("lstm2",))
    with pytest.raises(DataError, match="no weights for layer.*lstm2"):
        Captioner(DEPLOY, partial, VOCABULARY)


def test_weights_of_another_variant_are_refused(snapshot):
    with pytest.raises(DataError, match="lstm1.*3 blobs.*4"):
        Captioner(DEPLOY, snapshot, VOCABULARY, stages=("unfactored", "1-layer"))


@pytest.mark.parametrize("stages", VARIANTS)
def test_every_variant_captions(stages):
    variant = Captioner(DEPLOY, None, VOCABULARY, stages=stages)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in variant.word_net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    features = random_features(3)
    greedy = variant.greedy(features, max_length=6)
    assert [c.tokens for c in variant.beam_search(features, 1, max_length=6)] == \
        [c.tokens for c in greedy]
    scores = variant.score(features, [c.tokens for c in greedy])
    assert np.all(scores <= np.array([c.log_prob for c in greedy]) + 1e-9)


# ------------------------------------------------------------------------------ strategies

def test_greedy_equals_beam_search_of_width_one(random_markov):
    features = random_features(16)
    greedy = random_markov.greedy(features, max_length=12)
    beam = random_markov.beam_search(features, 1, max_length=12)
    assert beam == greedy        # tokens, log-probabilities (same sums) and endings
    # The model is varied enough for this to mean something: some captions end, some are cut.
    assert {c.ended for c in greedy} == {True, False}
    assert len({c.tokens for c in greedy}) > 8


def test_a_near_certain_sentence_is_found_by_every_strategy(captioner):
    program_markov(captioner, chain_table(5, 7, 9))
    features = random_features(3)
    expected = [(5, 7, 9)] * 3
    assert [c.tokens for c in captioner.greedy(features)] == expected
    for k in (1, 2, 3, 5, 48):
        beam = captioner.beam_search(features, k)
        assert [c.tokens for c in beam] == expected
        assert all(c.ended and c.log_prob > -1e-6 for c in beam)
    assert [c.tokens for c in captioner.sample(features, 1.0)] == expected


def test_beam_search_finds_the_better_caption_greedy_misses(captioner):
    # After BOS: word 2 (p = 0.5) beats word 3 (p = 0.4), but after 2 every word is about
    # equally likely (EOS slightly more), while after 3 EOS is certain. Greedy takes 2 and
    # ends there at about log 0.5 + log(1/30); beam search keeps 3 and ends at about log 0.4.
    table = np.zeros((V, V))
    table[:, EOS_INDEX] = 30.0
    table[EOS_INDEX] = np.log(0.1 / 46)
    table[EOS_INDEX, EOS_INDEX] = -30.0
    table[EOS_INDEX, 2], table[EOS_INDEX, 3] = np.log(0.5), np.log(0.4)
    table[2] = 0.0
    table[2, EOS_INDEX] = 0.5
    program_markov(captioner, table)
    features = random_features(2)
    greedy = captioner.greedy(features)
    assert [c.tokens for c in greedy] == [(2,), (2,)]
    for k in (2, 3):
        beam = captioner.beam_search(features, k)
        assert [c.tokens for c in beam] == [(3,), (3,)]
        for found, missed in zip(beam, greedy):
            assert found.log_prob == pytest.approx(np.log(0.4), abs=1e-2)
            assert found.log_prob > missed.log_prob + 2.0
    # The summed log-probabilities are the model's: score() agrees with both searches.
    np.testing.assert_allclose(captioner.score(features, [(3,), (2,)]),
                               [beam[0].log_prob, greedy[1].log_prob], rtol=1e-9)


def next_word_brute_force(captioner, features):
    """The best caption of at most 2 tokens by enumeration: [EOS], [w, EOS], or [w1, w2]
    (cut at max length 2), from next_word_log_probs."""
    first = captioner.next_word_log_probs(features, [[]])[0]
    second = captioner.next_word_log_probs(features.repeat(V - 1, 1),
                                           [[w] for w in range(1, V)])
    candidates = [(first[EOS_INDEX], (), True)]
    for w in range(1, V):
        candidates.append((first[w] + second[w - 1, EOS_INDEX], (w,), True))
        best = int(np.argmax(second[w - 1, 1:])) + 1
        candidates.append((first[w] + second[w - 1, best], (w, best), False))
    return max(candidates, key=lambda candidate: candidate[0])


def test_a_beam_as_wide_as_the_vocabulary_finds_the_best_two_token_caption(random_markov):
    # Width V keeps every one-word prefix, so with max length 2 the search is exhaustive.
    for row in range(3):
        features = random_features(3)[row:row + 1]
        log_prob, tokens, ended = next_word_brute_force(random_markov, features)
        (found,) = random_markov.beam_search(features, V, max_length=2)
        assert (found.tokens, found.ended) == (tokens, ended)
        # float32 matmuls round differently for another stream count: ~1e-6.
        assert found.log_prob == pytest.approx(log_prob, abs=1e-5)


def test_sampling_with_a_huge_inverse_temperature_is_greedy(random_markov):
    features = random_features(16)
    greedy = random_markov.greedy(features, max_length=12)
    sampled = random_markov.sample(features, 1e9, max_length=12)
    assert [c.tokens for c in sampled] == [c.tokens for c in greedy]
    assert [c.log_prob for c in sampled] == pytest.approx([c.log_prob for c in greedy])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_sampling_draws_from_exp_of_inverse_temperature_times_logits(captioner, temperature):
    # First word 2 or 3 with logits 1 and 0: p(2) = sigmoid(temperature), since the
    # temperature multiplies the logits (it is an INVERSE temperature).
    table = np.zeros((V, V))
    table[:, EOS_INDEX] = 30.0
    table[EOS_INDEX] = -30.0
    table[EOS_INDEX, 2], table[EOS_INDEX, 3] = 1.0, 0.0
    program_markov(captioner, table)
    draws = 4000
    generator = torch.Generator().manual_seed(5)
    sampled = captioner.sample(random_features(1).repeat(draws, 1), temperature,
                               max_length=3, generator=generator)
    share = np.mean([c.tokens == (2,) for c in sampled])
    expected = 1 / (1 + np.exp(-temperature))
    assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / draws)
    assert {c.tokens for c in sampled} == {(2,), (3,)}
    # log_prob is under the model (temperature 1), whatever the sampling temperature.
    assert {round(c.log_prob, 6) for c in sampled} == \
        {round(float(np.log(1 / (1 + np.exp(-1)))), 6), round(float(np.log(1 / (1 + np.e))), 6)}


def test_best_of_samples_keeps_the_most_probable_draw(captioner):
    # First word 2 (p = 0.73) or 3 (p = 0.27), then EOS: of 20 draws per image one is (2,)
    # but for a chance of 0.27 ** 20, and (2,) is the more probable caption.
    table = np.zeros((V, V))
    table[:, EOS_INDEX] = 30.0
    table[EOS_INDEX] = -30.0
    table[EOS_INDEX, 2], table[EOS_INDEX, 3] = 1.0, 0.0
    program_markov(captioner, table)
    best = generate.best_of_samples(captioner, random_features(3), 1.0, 20, 5,
                                    torch.Generator().manual_seed(2))
    assert [c.tokens for c in best] == [(2,)] * 3
    single = generate.best_of_samples(captioner, random_features(40), 1.0, 1, 5,
                                      torch.Generator().manual_seed(2))
    assert {c.tokens for c in single} == {(2,), (3,)}     # one draw alone is not reranked


def test_sampling_is_reproducible_with_a_seeded_generator(random_markov):
    features = random_features(8)
    first = random_markov.sample(features, 1.0, generator=torch.Generator().manual_seed(9))
    again = random_markov.sample(features, 1.0, generator=torch.Generator().manual_seed(9))
    assert first == again


def test_sampling_refuses_a_non_positive_temperature(random_markov):
    with pytest.raises(ValueError, match="temperature"):
        random_markov.sample(random_features(1), 0.0)


def test_batched_and_one_at_a_time_captions_agree(random_markov):
    features = random_features(8)
    for decode in (lambda f: random_markov.greedy(f, max_length=12),
                   lambda f: random_markov.beam_search(f, 3, max_length=12),
                   lambda f: random_markov.sample(f, 1e9, max_length=12)):
        together = decode(features)
        alone = [decode(features[row:row + 1])[0] for row in range(len(features))]
        assert [c.tokens for c in together] == [c.tokens for c in alone]
        # float32 matmuls round differently for another stream count: ~1e-6.
        assert [c.log_prob for c in together] == pytest.approx([c.log_prob for c in alone],
                                                               rel=1e-5)


def test_max_length_cuts_captions_that_do_not_end(captioner):
    table = np.zeros((V, V))
    table[:, 4] = 30.0                                  # "word 4" forever, never EOS
    program_markov(captioner, table)
    features = random_features(2)
    for caption in captioner.greedy(features, max_length=5) + \
            captioner.beam_search(features, 3, max_length=5):
        assert caption == Caption((4,) * 5, pytest.approx(0.0, abs=1e-6), False)
    assert captioner.vocabulary.word(4) == "on"
    assert captioner.sentence(captioner.greedy(features, max_length=2)[0]) == "On on..."


# ------------------------------------------------------------------------------ scoring

def test_score_is_the_sum_of_per_step_log_probs_of_a_forced_decode(random_markov):
    features = random_features(4)
    captions = [(5, 9, 2), (), (12,), (7, 7, 7, 7, 30)]
    # Independently: the deploy net as written (with its probs layer), fed word by word.
    reference = Net(DEPLOY, phase="TEST", stages=("word", "factored", "2-layer"))
    reference.share_weights_from(random_markov.word_net)
    expected = []
    with torch.no_grad():
        for row, caption in enumerate(captions):
            reference.reset_state()
            total, previous = 0.0, EOS_INDEX
            for step, word in enumerate(list(caption) + [EOS_INDEX]):
                probs = reference(cont_sentence=torch.full((1, 1), float(step > 0)),
                                  input_sentence=torch.full((1, 1), float(previous)),
                                  image_features=features[row:row + 1])["probs"]
                total += torch.log(probs[0, 0, word].double()).item()
                previous = word
            expected.append(total)
    np.testing.assert_allclose(random_markov.score(features, captions), expected, rtol=1e-5)


def test_score_of_a_generated_caption_is_its_log_prob(random_markov):
    features = random_features(16)
    greedy = random_markov.greedy(features, max_length=30)
    ended = [row for row, caption in enumerate(greedy) if caption.ended]
    assert ended
    scores = random_markov.score(features[ended], [greedy[row].tokens for row in ended])
    np.testing.assert_allclose(scores, [greedy[row].log_prob for row in ended], rtol=1e-5)


def test_score_pairs_rows_with_captions(random_markov):
    with pytest.raises(ValueError, match="2 feature rows but 1"):
        random_markov.score(random_features(2), [(3,)])


# ------------------------------------------------------------------------------ images

def test_images_are_transformed_as_training_transformed_them(captioner):
    image = captioner.load_image(TEST_IMAGES[0])
    from PIL import Image
    rgb = np.asarray(Image.open(TEST_IMAGES[0]).convert("RGB"), dtype=np.float32)
    expected = (rgb[:, :, ::-1].transpose(2, 0, 1) - 128.0) * 0.0078125     # BGR, CHW
    np.testing.assert_allclose(image, expected, rtol=0, atol=1e-7)


def test_images_of_another_size_are_resized_to_the_input(captioner, tmp_path):
    from PIL import Image
    big = tmp_path / "big.png"
    Image.open(TEST_IMAGES[0]).resize((64, 48)).save(big)
    assert captioner.load_image(str(big)).shape == (3, 32, 32)


def test_unreadable_image_is_named(captioner, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        captioner.load_image(str(broken))


# ------------------------------------------------------------------------------ command line

def reference_captions(snapshot, paths, **decode):
    """What the library gives for these images with the snapshot (greedy unless beam=K)."""
    model = Captioner(DEPLOY, snapshot, VOCABULARY)
    features = model.image_features(model.load_images(paths))
    if "beam" in decode:
        return model, model.beam_search(features, decode["beam"], decode["max_length"])
    return model, model.greedy(features, decode.get("max_length", 50))


def common_args(snapshot):
    return ["--weights", snapshot, "--net", DEPLOY, "--vocabulary", VOCABULARY]


def test_cli_text_output(snapshot, capsys):
    status, out, err = run_main(generate.main, common_args(snapshot) + TEST_IMAGES[:2]
                                + ["--max-length", "10"], capsys)
    assert status == 0, err
    model, expected = reference_captions(snapshot, TEST_IMAGES[:2], max_length=10)
    assert out.splitlines() == ["%s\t%s" % (path, model.sentence(caption))
                                for path, caption in zip(TEST_IMAGES[:2], expected)]


def test_cli_coco_output_with_beam_search(snapshot, capsys, tmp_path):
    output = tmp_path / "results.json"
    status, out, err = run_main(generate.main, common_args(snapshot) + TEST_IMAGES[:2] + [
        "--beam", "2", "--max-length", "10", "--format", "coco", "-o", str(output)], capsys)
    assert (status, out) == (0, ""), err
    model, expected = reference_captions(snapshot, TEST_IMAGES[:2], beam=2, max_length=10)
    results = json.loads(output.read_text())
    assert results == [{"image_id": image_id, "caption": model.text(caption)}
                       for image_id, caption in zip((581, 582), expected)]
    # lrcn-caption-eval reads it.
    assert set(load_results(str(output), {581, 582, 583})) == {581, 582}


def test_cli_batch_size_does_not_change_captions(snapshot, capsys):
    outputs = []
    for batch_size in ("1", "4"):
        status, out, err = run_main(generate.main, common_args(snapshot) + TEST_IMAGES + [
            "--max-length", "8", "--batch-size", batch_size], capsys)
        assert status == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 4


def test_cli_reads_folders_coco_json_and_list_files(snapshot, capsys, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for path in TEST_IMAGES[:2]:
        (folder / os.path.basename(path)).write_bytes(open(path, "rb").read())
    coco = tmp_path / "images.json"
    coco.write_text(json.dumps({"images": [
        {"id": 70, "file_name": os.path.basename(TEST_IMAGES[0])},
        {"id": 90, "file_name": os.path.basename(TEST_IMAGES[1])}]}))
    listing = tmp_path / "list.txt"
    listing.write_text("".join("%s 0\n" % path for path in TEST_IMAGES[:2]))
    captions = {}
    for name, argv in (("folder", [str(folder)]), ("list", [str(listing)]),
                       ("coco", [str(coco), "--image-root", IMAGES]),
                       ("files", TEST_IMAGES[:2])):
        status, out, err = run_main(generate.main, common_args(snapshot) + argv + [
            "--max-length", "8", "--format", "coco"], capsys)
        assert status == 0, err
        captions[name] = json.loads(out)
    assert [r["image_id"] for r in captions["coco"]] == [70, 90]
    assert [r["image_id"] for r in captions["files"]] == [581, 582]
    texts = {name: [r["caption"] for r in results] for name, results in captions.items()}
    assert texts["folder"] == texts["list"] == texts["coco"] == texts["files"]


def test_cli_sampling_with_a_huge_inverse_temperature_is_greedy(snapshot, capsys):
    status, out, err = run_main(generate.main, common_args(snapshot) + TEST_IMAGES[:2] + [
        "--temperature", "1e9", "--samples", "3", "--max-length", "10"], capsys)
    assert status == 0, err
    assert (0, out, "") == run_main(generate.main, common_args(snapshot) + TEST_IMAGES[:2]
                                    + ["--max-length", "10"], capsys)


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as stop:
        generate.main(["--help"])
    assert stop.value.code == 0
    assert "examples:" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["--beam", "2", "--temperature", "1"],
    ["--beam", "0"],
    ["--temperature", "0"],
    ["--samples", "3"],
    ["--max-length", "0"],
])
def test_cli_usage_errors(snapshot, argv, capsys):
    with pytest.raises(SystemExit) as stop:
        generate.main(common_args(snapshot) + TEST_IMAGES[:1] + argv)
    assert stop.value.code == 2


def error_of(argv, capsys):
    status, out, err = run_main(generate.main, argv, capsys)
    assert status == 1 and out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("lrcn-caption: error: ")
    return err


def test_cli_errors_are_one_clear_message(snapshot, capsys, tmp_path):
    assert "weights file not found" in error_of(
        ["--weights", str(tmp_path / "missing.caffemodel")] + TEST_IMAGES[:1], capsys)
    assert "nowhere.png" in error_of(common_args(snapshot) + ["nowhere.png"], capsys)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    assert "broken.png" in error_of(common_args(snapshot) + [str(broken)], capsys)
    text_weights = tmp_path / "weights.caffemodel"
    text_weights.write_text("layer { name: 'x' }")
    assert "caffemodel" in error_of(["--weights", str(text_weights), "--net", DEPLOY]
                                    + TEST_IMAGES[:1], capsys)
    small_vocabulary = tmp_path / "vocabulary.txt"
    small_vocabulary.write_text("<unk>\na\nb\n")
    assert "vocabulary" in error_of(common_args(snapshot)[:4] + [
        "--vocabulary", str(small_vocabulary)] + TEST_IMAGES[:1], capsys)
    assert "lstm2" in error_of(common_args(snapshot)[2:] + [
        "--weights", rewritten_snapshot(snapshot, tmp_path / "partial.caffemodel", ("lstm2",))]
        + TEST_IMAGES[:1], capsys)
    unnamed = tmp_path / "picture.png"
    unnamed.write_bytes(open(TEST_IMAGES[0], "rb").read())
    assert "image id" in error_of(common_args(snapshot) + [str(unnamed), "--format", "coco"],
                                  capsys)
    listing = tmp_path / "list.txt"
    listing.write_text("missing_image.png 0\n")
    assert "missing_image.png" in error_of(common_args(snapshot) + [str(listing)], capsys)


def test_cli_blind_baseline_gives_every_image_the_same_caption(snapshot, capsys):
    status, out, err = run_main(generate.main, common_args(snapshot) + TEST_IMAGES[:3]
                                + ["--max-length", "10", "--blind"], capsys)
    assert status == 0, err
    captions = [line.split("\t", 1)[1] for line in out.splitlines()]
    assert len(captions) == 3 and len(set(captions)) == 1
