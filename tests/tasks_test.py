"""tools/tasks/tasks.py: every task's document answers its question, and
only one way; lengths stay within the target; the same seed gives the same
sample. Lengths are counted in words here (the generator takes any
counter), so the test needs no tokenizer package."""
import os
import random
import re
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "tasks"))
import tasks  # noqa: E402


def count(text):
    return len(text.split())


class TasksTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hay = tasks.Haystack(count)

    def sample(self, task, n, seed):
        return tasks.make_sample(task, random.Random(seed), self.hay, n)

    def test_lengths_and_determinism(self):
        for task in tasks.TASKS:
            for n in (300, 2000, 8000):
                s = self.sample(task, n, f"{task}-{n}")
                self.assertLessEqual(s["tokens"], n, (task, n))
                self.assertGreater(s["tokens"], 0.9 * n, (task, n))
                self.assertEqual(s, self.sample(task, n, f"{task}-{n}"))
        self.assertNotEqual(self.sample("passkey", 2000, 1)["document"],
                            self.sample("passkey", 2000, 2)["document"])

    def test_answers_follow_from_the_document(self):
        for seed in range(20):
            for task in tasks.TASKS:
                s = self.sample(task, 1500, seed)
                doc, q, a = s["document"], s["question"], s["answer"]
                for question, answer in [(q, a)] + list(s["more_questions"]):
                    self.assertEqual(self.solve(task, doc, question), answer, (task, seed, question))

    def solve(self, task, doc, question):
        """The answer read off the document by rule, failing on ambiguity."""
        def one(pattern):
            found = set(re.findall(pattern, doc))
            self.assertEqual(len(found), 1, (pattern, found))
            return found.pop()
        if task == "passkey":
            return one(r"The pass key is (\d+)\.")
        if task == "niah_multikey":
            key = re.search(r"number for (\S+)\?", question).group(1)
            return one(r"magic numbers for " + re.escape(key) + r" is: (\d+)\.")
        if task == "kv":
            key = re.search(r"code of (\S+)\?", question).group(1)
            return one(r"(?<![\w-])" + re.escape(key) + r": (\d+)\.")
        if task == "vt":
            value = re.search(r"value (\d+)\?", question).group(1)
            chain = [one(r"VAR (\w+) = " + value + r"\.")]
            while True:
                nxt = re.findall(r"VAR (\w+) = " + chain[-1] + r"\.", doc)
                if not nxt:
                    return " ".join(chain)
                self.assertEqual(len(nxt), 1)
                chain.append(nxt[0])
        if task == "qa":
            m = re.match(r"Where does (\w+) live\?", question)
            if m:
                return one(re.escape(m.group(1)) + r" lives in (\w+)\.")
            m = re.match(r"What does (\w+) work as\?", question)
            return one(re.escape(m.group(1)) + r" works as a (\w+)\.")
        raise AssertionError(task)

    def test_unknown_task(self):
        with self.assertRaisesRegex(ValueError, "unknown task 'needle'"):
            tasks.make_sample("needle", random.Random(0), self.hay, 1000)


if __name__ == "__main__":
    unittest.main()
