// The swarms page: read an invite's QR code from a photo (jsQR.js, vendored) and fill the "Invite code" field.
// Only an enhancement: without JavaScript the scan part stays hidden and the code is pasted.
"use strict";
(function () {
  var MAX_SIDE = 1600; // a phone photo is scaled down to this many pixels on its longer side first

  function setup() {
    var box = document.getElementById("scan");
    var input = document.getElementById("scan-file");
    var status = document.getElementById("scan-status");
    var field = document.getElementById("code");
    if (!box || !input || !status || !field || typeof window.jsQR !== "function") return;
    if (!window.createImageBitmap && !window.FileReader) return;
    box.hidden = false;

    function say(key) {
      status.textContent = box.getAttribute("data-" + key) || "";
    }

    function decode(image, width, height) {
      var scale = Math.min(1, MAX_SIDE / Math.max(width, height));
      var canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(width * scale));
      canvas.height = Math.max(1, Math.round(height * scale));
      var context = canvas.getContext("2d");
      context.fillStyle = "#fff"; // a transparent picture reads as white, not black
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.drawImage(image, 0, 0, canvas.width, canvas.height);
      var pixels = context.getImageData(0, 0, canvas.width, canvas.height);
      return window.jsQR(pixels.data, pixels.width, pixels.height, { inversionAttempts: "attemptBoth" });
    }

    function done(found) {
      if (found && found.data) {
        field.value = found.data;
        say("found");
        field.focus();
      } else {
        say("not-found");
      }
    }

    // The picture is read without a URL (createImageBitmap) or as a data: URL: the CSP allows no blob: images.
    function readAsDataUrl(file) {
      return new Promise(function (resolve, reject) {
        var reader = new FileReader();
        reader.onerror = reject;
        reader.onload = function () {
          var img = new Image();
          img.onerror = reject;
          img.onload = function () {
            resolve(decode(img, img.naturalWidth, img.naturalHeight));
          };
          img.src = reader.result;
        };
        reader.readAsDataURL(file);
      });
    }

    function read(file) {
      if (!window.createImageBitmap) return readAsDataUrl(file);
      return window.createImageBitmap(file).then(
        function (bitmap) {
          var found = decode(bitmap, bitmap.width, bitmap.height);
          if (bitmap.close) bitmap.close();
          return found;
        },
        function () {
          return readAsDataUrl(file); // a format the bitmap decoder does not know may still load as an image
        }
      );
    }

    input.addEventListener("change", function () {
      var file = input.files && input.files[0];
      if (!file) return;
      say("reading");
      read(file).then(done, function () {
        say("failed");
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setup);
  } else {
    setup();
  }
})();
