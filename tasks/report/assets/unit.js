/* ceta2vec unit page: click a spectrogram to play its clip; a playhead follows the audio. No libraries. */
(function () {
  "use strict";
  var boxes = document.querySelectorAll(".exemplar-spec");
  Array.prototype.forEach.call(boxes, function (box) {
    var audio = document.getElementById(box.getAttribute("data-audio"));
    var head = box.querySelector(".playhead");
    if (!audio) { return; }
    box.addEventListener("click", function () {
      Array.prototype.forEach.call(document.querySelectorAll("audio"), function (other) {
        if (other !== audio) { other.pause(); }
      });
      audio.currentTime = 0;
      audio.play();
    });
    function move() {
      if (head && audio.duration) {
        head.style.left = (100 * audio.currentTime / audio.duration) + "%";
        head.style.display = "block";
      }
    }
    audio.addEventListener("timeupdate", move);
    audio.addEventListener("seeked", move);
    audio.addEventListener("ended", function () { if (head) { head.style.display = "none"; } });
  });
  window.ceta2vecUnitPage = { clips: boxes.length };
}());
